"""`config_common_kwargs`, which `ConfigTester.check_config_arguments_init` (tests/test_configuration_common.py of the
Transformers sdist) imports: every common `PreTrainedConfig` argument of Transformers 5.24, each with a value other
than its default, so that a config that drops or overrides one of them is caught."""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",  # the check compares `config.dtype` with torch.float16
    "chunk_size_feed_forward": 5,
    "is_encoder_decoder": True,
    "architectures": ["SomeModelForSomeTask"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
