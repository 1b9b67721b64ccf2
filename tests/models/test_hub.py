"""Saving, loading, Auto classes, remote code and pipelines: what a Hub user does with a SupMAE directory."""

import ast
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers import tiny_config
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    pipeline,
)
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from supmae import (
    SupMAEConfig,
    SupMAEForImageClassification,
    SupMAEForPreTraining,
    SupMAEImageProcessor,
    SupMAEModel,
)


def small_processor():
    return SupMAEImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})


def random_image(seed, size=(50, 40)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


@pytest.fixture
def pretraining_dir(tmp_path):
    torch.manual_seed(0)
    model = SupMAEForPreTraining(tiny_config(id2label={i: f"class_{i}" for i in range(5)}))
    model.save_pretrained(tmp_path / "pretrained")
    small_processor().save_pretrained(tmp_path / "pretrained")
    return tmp_path / "pretrained", model.eval()


def test_auto_classes_resolve_supmae():
    config = AutoConfig.for_model(
        "supmae", **{k: v for k, v in tiny_config().to_diff_dict().items() if k != "model_type"}
    )
    assert isinstance(config, SupMAEConfig)
    assert type(AutoModel.from_config(config)) is SupMAEModel
    assert type(AutoModelForPreTraining.from_config(config)) is SupMAEForPreTraining
    assert type(AutoModelForImageClassification.from_config(config)) is SupMAEForImageClassification


@pytest.mark.parametrize("model_class", [SupMAEModel, SupMAEForPreTraining, SupMAEForImageClassification])
def test_safetensors_round_trip_is_exact(model_class, tmp_path, images):
    pixel_values, noise = images
    model = model_class(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    assert os.path.isfile(tmp_path / "model.safetensors")
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in os.listdir(tmp_path))
    loaded = model_class.from_pretrained(tmp_path).eval()
    original, reloaded = model.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys()
    assert all(torch.equal(original[k], reloaded[k]) for k in original)
    kwargs = {"noise": noise} if model_class is not SupMAEForImageClassification else {}
    for a, b in zip(model(pixel_values, **kwargs).to_tuple(), loaded(pixel_values, **kwargs).to_tuple(), strict=True):
        assert torch.equal(a, b)


def test_saved_directory_is_remote_code(pretraining_dir):
    directory, _ = pretraining_dir
    files = set(os.listdir(directory))
    assert {"configuration_supmae.py", "modeling_supmae.py", "image_processing_supmae.py"} <= files
    auto_map = json.loads((directory / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_supmae.SupMAEConfig",
        "AutoModel": "modeling_supmae.SupMAEModel",
        "AutoModelForPreTraining": "modeling_supmae.SupMAEForPreTraining",
        "AutoModelForImageClassification": "modeling_supmae.SupMAEForImageClassification",
        "AutoBackbone": "modeling_supmae.SupMAEBackbone",
        "AutoImageProcessor": "image_processing_supmae.SupMAEImageProcessor",
    }
    processor_config = json.loads((directory / "preprocessor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoImageProcessor": "image_processing_supmae.SupMAEImageProcessor"}
    # The three model files import torch, transformers and each other (relatively), never the rest of the package.
    allowed = set(sys.stdlib_module_names) | {
        "numpy",
        "PIL",
        "torch",
        "torchvision",
        "transformers",
        "huggingface_hub",
    }
    for name in ("configuration_supmae.py", "modeling_supmae.py", "image_processing_supmae.py"):
        for node in ast.walk(ast.parse((directory / name).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] in allowed, (name, node.module)
            elif isinstance(node, ast.Import):
                assert all(alias.name.split(".")[0] in allowed for alias in node.names), name


def test_loads_with_trust_remote_code_where_supmae_cannot_be_imported(pretraining_dir, tmp_path, images):
    directory, model = pretraining_dir
    pixel_values, noise = images
    torch.save({"pixel_values": pixel_values, "noise": noise}, tmp_path / "inputs.pt")
    expected = model(pixel_values, noise=noise)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["supmae"] = None  # `import supmae` raises ImportError from here on
        try:
            import supmae
            raise SystemExit("supmae is importable")
        except ImportError:
            pass
        import torch
        from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification,
                                  AutoModelForPreTraining)
        directory = {str(directory)!r}
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        config = AutoConfig.from_pretrained(directory, trust_remote_code=True)
        model = AutoModelForPreTraining.from_pretrained(directory, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        output = model(inputs["pixel_values"], noise=inputs["noise"])
        encoder = AutoModel.from_pretrained(directory, trust_remote_code=True)
        classifier = AutoModelForImageClassification.from_pretrained(directory, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained(directory, trust_remote_code=True)
        assert type(processor).__name__ == "SupMAEImageProcessor", type(processor)
        torch.save({{"logits": output.logits, "loss": output.loss, "config": type(config).__name__,
                    "encoder": type(encoder).__name__, "classifier": type(classifier).__name__}},
                   {str(tmp_path / "outputs.pt")!r})
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = torch.load(tmp_path / "outputs.pt")
    assert (outputs["config"], outputs["encoder"], outputs["classifier"]) == (
        "SupMAEConfig",
        "SupMAEModel",
        "SupMAEForImageClassification",
    )
    # Same code, same weights, same noise; a tolerance only for a different thread count's summation order.
    torch.testing.assert_close(outputs["logits"], expected.logits.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(outputs["loss"], expected.loss.detach(), rtol=0, atol=1e-6)


def test_pretraining_checkpoint_starts_fine_tuning(pretraining_dir):
    directory, pretrained = pretraining_dir
    logger = logging.get_logger("supmae.modeling_supmae")
    with CaptureLogger(logger) as captured:
        model, info = SupMAEForImageClassification.from_pretrained(directory, num_labels=3, output_loading_info=True)
    # One plain sentence instead of Transformers' key-by-key report.
    assert captured.out.count("reused the encoder of a SupMAE pretraining checkpoint") == 1
    decoder_tensors, head_tensors = len(pretrained.decoder.state_dict()), len(pretrained.supervised_head.state_dict())
    for part in (
        f"the pixel decoder ({decoder_tensors} tensors)",
        f"the pretraining head ({head_tensors} tensors)",
        "the encoder's final LayerNorm",
        "newly initialized: classifier, fc_norm",
    ):
        assert part in captured.out
    assert info["unexpected_keys"] == set() and info["missing_keys"] == set()

    encoder, reused = pretrained.supmae.state_dict(), model.supmae.state_dict()
    assert set(encoder) - set(reused) == {"layernorm.weight", "layernorm.bias"}
    assert all(torch.equal(encoder[k], reused[k]) for k in reused)
    assert model.classifier.weight.shape == (3, 32) and model.classifier.weight.std() < 1e-4
    assert model.supmae.embeddings.position_embeddings.requires_grad
    # Loading a fine-tuned checkpoint again drops nothing and says nothing.
    with CaptureLogger(logger) as captured:
        SupMAEForImageClassification.from_pretrained(directory, num_labels=3).save_pretrained(directory / "ft")
        SupMAEForImageClassification.from_pretrained(directory / "ft")
    assert captured.out.count("reused the encoder") == 1


def test_image_classification_pipeline_reads_label_names(pretraining_dir, tmp_path):
    directory, _ = pretraining_dir
    model = SupMAEForImageClassification.from_pretrained(directory)  # keeps the 5 named classes
    model.save_pretrained(tmp_path / "classifier")
    small_processor().save_pretrained(tmp_path / "classifier")
    classify = pipeline("image-classification", model=str(tmp_path / "classifier"))
    predictions = classify(random_image(0), top_k=5)
    assert sorted(p["label"] for p in predictions) == [f"class_{i}" for i in range(5)]
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-5)


def test_feature_extraction_pipeline_sees_the_whole_image_in_order(pretraining_dir):
    directory, pretrained = pretraining_dir
    extract = pipeline("image-feature-extraction", model=str(directory))
    image = random_image(1)
    features = extract(image, return_tensors=True)
    assert features.shape == (1, 1 + 16, 32)  # all 16 patches, not the 4 a masked encoder returns
    pixel_values = AutoImageProcessor.from_pretrained(directory)(image, return_tensors="pt").pixel_values
    expected = pretrained.supmae(pixel_values).last_hidden_state
    torch.testing.assert_close(features, expected, atol=1e-6, rtol=0)


def test_pipelines_never_ask_to_run_remote_code(pretraining_dir, monkeypatch):
    """With the package installed, a saved directory's auto_map must not make a pipeline prompt
    "Do you wish to run the custom code? [y/N]" (Transformers looks for a video processor, too)."""
    directory, _ = pretraining_dir
    prompts = []
    monkeypatch.setattr("builtins.input", lambda *args: prompts.append(args) or "n")
    pipeline("image-feature-extraction", model=str(directory))
    pipeline("image-classification", model=str(directory))
    assert prompts == []
