"""Deployment through Transformers' exporters (docs/DEPLOY.md): ONNX (`OnnxExporter`, run with ONNX Runtime) and
`torch.export` (`DynamoExporter`) for the classifier and for the encoder's features, exported with a dynamic batch
and run at another batch size. Needs the `deploy` extra (onnx, onnxscript, onnxruntime)."""

import numpy as np
import pytest
import torch
from helpers import tiny_config
from PIL import Image
from transformers.exporters import DynamoConfig, DynamoExporter, ExportedModel, OnnxConfig, OnnxExporter

from supmae import SupMAEForImageClassification, SupMAEModel
from supmae.data.transforms import eval_image_processor


onnxruntime = pytest.importorskip(
    "onnxruntime", reason="the deploy extra is not installed: pip install -e '.[deploy]'"
)
pytest.importorskip("onnxscript", reason="the deploy extra is not installed: pip install -e '.[deploy]'")

# The claim of docs/DEPLOY.md: exported logits and features within 1e-4 of PyTorch's (float32).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    model = SupMAEForImageClassification(tiny_config(num_labels=3)).eval()
    # A trained-looking head: the fine-tuning init (std 2e-5) would make every logit ~0 and the check vacuous.
    torch.nn.init.normal_(model.classifier.weight, std=0.5)
    return model


def batch(size: int, seed: int) -> torch.Tensor:
    return torch.randn(size, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow
def test_onnx_classifier_runs_in_onnxruntime_at_any_batch_size(classifier, tmp_path):
    exported = OnnxExporter().export(classifier, {"pixel_values": batch(2, 0)}, OnnxConfig(dynamic=True))
    exported.save_pretrained(tmp_path)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a symbolic batch dimension
    for size in (2, 5, 1):
        pixel_values = batch(size, seed=size)
        (logits,) = session.run(["logits"], {"pixel_values": pixel_values.numpy()})
        with torch.no_grad():
            expected = classifier(pixel_values).logits
        assert logits.shape == (size, 3)
        torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=0, atol=TOLERANCE)
        assert expected.abs().max() > 0.1  # logits that differ from image to image, not ~0
    # The saved export also loads back through Transformers, runs on ONNX Runtime and returns the model's output.
    reloaded = ExportedModel.from_pretrained(tmp_path)
    pixel_values = batch(3, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(pixel_values=pixel_values).logits, classifier(pixel_values).logits, rtol=0, atol=TOLERANCE
        )
    # From an image, as docs/DEPLOY.md shows: the processor's numpy output goes straight in.
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    inputs = eval_image_processor(32)(image, return_tensors="np")
    (logits,) = session.run(None, {"pixel_values": inputs["pixel_values"]})
    with torch.no_grad():
        expected = classifier(torch.from_numpy(inputs["pixel_values"])).logits
    torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=0, atol=TOLERANCE)


@pytest.mark.slow
def test_onnx_encoder_gives_the_whole_image_features(tmp_path):
    torch.manual_seed(0)
    encoder = SupMAEModel(tiny_config()).eval()
    exported = OnnxExporter().export(encoder, {"pixel_values": batch(2, 0)}, OnnxConfig(dynamic=True))
    exported.save_pretrained(tmp_path)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    pixel_values = batch(4, seed=1)
    outputs = dict(
        zip(
            [o.name for o in session.get_outputs()],
            session.run(None, {"pixel_values": pixel_values.numpy()}),
            strict=True,
        )
    )
    with torch.no_grad():
        expected = encoder(pixel_values)
    # (B, 1 + L, D): the cls token and all 16 patches in image order, nothing masked.
    assert outputs["last_hidden_state"].shape == (4, 17, 32) and not outputs["mask"].any()
    torch.testing.assert_close(
        torch.from_numpy(outputs["last_hidden_state"]), expected.last_hidden_state, rtol=0, atol=TOLERANCE
    )


@pytest.mark.slow
def test_torch_export_of_the_classifier_runs_at_any_batch_size(classifier, tmp_path):
    exported = DynamoExporter().export(classifier, {"pixel_values": batch(2, 0)}, DynamoConfig(dynamic=True))
    exported.save_pretrained(tmp_path)
    program = torch.export.load(str(tmp_path / "model.pt2"))  # torch's own loader, no exporter involved
    for size in (2, 5):
        pixel_values = batch(size, seed=size)
        with torch.no_grad():
            expected = classifier(pixel_values).logits
            logits = program.module()(pixel_values=pixel_values).logits  # the model's output class
        torch.testing.assert_close(logits, expected, rtol=0, atol=TOLERANCE)
