"""Loading a saved directory: the mistakes from_pretrained names (damaged weights, a config that does not fit them,
another model type), and a pretraining checkpoint loaded with new classes."""

import json
import shutil

import pytest
from helpers import tiny_config
from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification

from supmae import SupMAEConfig, SupMAEForImageClassification, SupMAEForPreTraining


@pytest.fixture
def saved(tmp_path):
    SupMAEForPreTraining(tiny_config()).save_pretrained(tmp_path / "good")
    return tmp_path


def test_a_truncated_weights_file_is_named(saved):
    shutil.copytree(saved / "good", saved / "cut")
    weights_file = saved / "cut" / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:-1000])
    with pytest.raises(OSError, match=r"Could not read the weights .*cut/model\.safetensors: .* truncated or damaged"):
        SupMAEForPreTraining.from_pretrained(saved / "cut")


def test_a_config_that_does_not_fit_the_weights_names_the_tensors(saved):
    shutil.copytree(saved / "good", saved / "edited")
    config = json.loads((saved / "edited" / "config.json").read_text())
    (saved / "edited" / "config.json").write_text(json.dumps({**config, "decoder_hidden_size": 24}))
    message = r"do not fit the configuration \(\d+ tensors differ in shape\): decoder\.decoder_embed\.bias: \[16\] in "
    with pytest.raises(OSError, match=message + r"model\.safetensors, \[24\] from the config"):
        SupMAEForPreTraining.from_pretrained(saved / "edited")


def test_a_checkpoint_of_another_model_type_is_refused(saved):
    vit = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32)
    ViTForImageClassification(vit).save_pretrained(saved / "vit")
    for load in (SupMAEForPreTraining.from_pretrained, SupMAEForImageClassification.from_pretrained):
        with pytest.raises(ValueError, match=r"vit holds a 'vit' checkpoint .* not a SupMAE one; .*supmae-convert"):
            load(saved / "vit")
    assert type(AutoModelForImageClassification.from_pretrained(saved / "good")) is SupMAEForImageClassification
    assert SupMAEConfig.from_pretrained(saved / "good").model_type == "supmae"


def test_new_classes_load_without_an_id2label_warning(tmp_path, capfd):
    """The README's `from_pretrained(pretraining_dir, num_labels=10)` on a checkpoint with other classes: a new
    10-way classifier with generic names, and no "incompatible id2label" warning."""
    config = tiny_config(num_labels=2, id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    SupMAEForPreTraining(config).save_pretrained(tmp_path / "pretrained")
    model = SupMAEForImageClassification.from_pretrained(tmp_path / "pretrained", num_labels=10)
    assert model.classifier.out_features == 10 and model.config.id2label[9] == "LABEL_9"
    assert "incompatible" not in capfd.readouterr().err
