"""mmsegmentation's dropout before the classifiers of UperNet's decode and auxiliary heads, in our UperNet subclass.

mmsegmentation's decode heads end in `cls_seg`: `Dropout2d(dropout_ratio)` (0.1 in its UperNet recipes), then the
1x1 convolution; Transformers' UperNet heads go straight to the convolution. `SupMAEUperNetConfig.classifier_dropout`
adds the dropout in `SupMAEUperNetForSemanticSegmentation` without renaming a weight; 0, the default, keeps the
heads as they are.
"""

import torch
import torch.nn.functional as F
from helpers import tiny_config
from transformers import UperNetConfig, UperNetForSemanticSegmentation

from supmae.configuration_supmae import SupMAEUperNetConfig
from supmae.modeling_supmae import SupMAEUperNetForSemanticSegmentation


HEADS = dict(num_labels=3, hidden_size=16, auxiliary_channels=8)


def upernet(config_class=SupMAEUperNetConfig, **overrides):
    return config_class(backbone_config=tiny_config(num_hidden_layers=4, add_fpn=True), **HEADS, **overrides)


def test_both_heads_drop_whole_channels_before_their_classifier():
    """In training, each head's classifier convolves its features with whole channels zeroed (at rate p) and the
    others scaled by 1 / (1 - p); in evaluation, the features unchanged."""
    torch.manual_seed(0)
    model = SupMAEUperNetForSemanticSegmentation(upernet(classifier_dropout=0.5))
    seen = {}

    def record(key):
        return lambda module, inputs, output: seen.__setitem__(key, (inputs[0], output))

    classifiers = {"decode": model.decode_head.classifier, "auxiliary": model.auxiliary_head.classifier}
    for name, classifier in classifiers.items():
        assert classifier.dropout.p == 0.5
        classifier.register_forward_hook(record(name))
        classifier.dropout.register_forward_hook(record(name + " dropout"))
    pixel_values = torch.randn(4, 3, 32, 32)
    for training in (True, False):
        seen.clear()
        model.train(training)(pixel_values)
        for name, classifier in classifiers.items():
            features, logits = seen[name]
            dropout_input, dropped = seen[name + " dropout"]
            assert dropout_input is features
            assert torch.equal(logits, F.conv2d(dropped, classifier.weight, classifier.bias))
            if not training:
                assert torch.equal(dropped, features)
                continue
            zeroed = (dropped == 0).flatten(2).all(-1)  # (B, C): whole channels
            assert 0.2 < zeroed.float().mean() < 0.8
            assert torch.equal(dropped[~zeroed], features[~zeroed] * 2)


def test_same_weights_and_outputs_as_transformers_upernet_in_evaluation():
    """The dropout adds no weight: a Transformers UperNet takes the state dict as is and gives the same logits."""
    torch.manual_seed(0)
    ours = SupMAEUperNetForSemanticSegmentation(upernet(classifier_dropout=0.1)).eval()
    plain = UperNetForSemanticSegmentation(upernet(UperNetConfig)).eval()
    plain.load_state_dict(ours.state_dict(), strict=True)
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(pixel_values).logits, plain(pixel_values).logits)


def test_default_and_todays_directories_keep_todays_heads(tmp_path):
    """Off by default, also for a directory saved before the field existed, which loads into a model with the
    dropout turned on without a missing or unexpected weight."""
    assert SupMAEUperNetConfig().classifier_dropout == 0.0
    default = SupMAEUperNetForSemanticSegmentation(upernet())
    assert type(default.decode_head.classifier) is torch.nn.Conv2d
    assert type(default.auxiliary_head.classifier) is torch.nn.Conv2d

    UperNetForSemanticSegmentation(upernet(UperNetConfig)).save_pretrained(tmp_path)
    assert SupMAEUperNetForSemanticSegmentation.from_pretrained(tmp_path).config.classifier_dropout == 0.0
    model, info = SupMAEUperNetForSemanticSegmentation.from_pretrained(
        tmp_path, classifier_dropout=0.1, output_loading_info=True
    )
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert model.decode_head.classifier.dropout.p == 0.1 and model.auxiliary_head.classifier.dropout.p == 0.1
