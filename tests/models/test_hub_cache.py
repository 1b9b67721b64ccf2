"""Loading by Hub repo id, offline, from a cache laid out as huggingface_hub lays out downloads: the pretraining
model, the fine-tuned classifier, the image processor and a segmentation directory, through `import supmae` and
through remote code where supmae cannot be imported (tests/isolated.py).

The cache is `models--<org>--<name>/{blobs/<etag>, snapshots/<commit>/<file> -> ../../blobs/<etag>, refs/main}`, as
`snapshot_download` leaves it; nothing is downloaded (HF_HUB_OFFLINE=1).
"""

import hashlib
import json
import os
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from helpers import tiny_config
from isolated import run_without_supmae
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    AutoModelForSemanticSegmentation,
)

from supmae import SupMAEForImageClassification, SupMAEForPreTraining, SupMAEImageProcessor
from supmae.data.transforms import eval_image_processor
from supmae.interop.upernet import save_segmentation_model, segmentation_image_processor, segmentation_model


REPOS = {
    "pretrained": "supmae-tests/tiny-pretrained",
    "classifier": "supmae-tests/tiny-classifier",
    "segmentation": "supmae-tests/tiny-upernet",
}


def etag(path: Path) -> str:
    """The blob name the Hub cache uses: the sha256 of an LFS file (weights), the git blob sha1 of any other."""
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def put_in_hub_cache(directory: Path, cache: Path, repo_id: str) -> str:
    """Lay `directory` out in `cache` as a download of `repo_id` at one commit; returns the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        blob = repo / "blobs" / etag(file)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(file.read_bytes())
        link = snapshot / file.relative_to(directory)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return commit


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A Hub cache holding the three repositories, the models they hold, and inputs for them."""
    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(0)
    models = {
        "pretrained": SupMAEForPreTraining(tiny_config(num_hidden_layers=4)).eval(),  # 4 blocks for the pyramid
        "classifier": SupMAEForImageClassification(tiny_config(num_labels=3)).eval(),
    }
    for name, model in models.items():
        model.save_pretrained(root / name)
        eval_image_processor(32).save_pretrained(root / name)
    models["segmentation"], _ = segmentation_model(
        None, {0: "a", 1: "b"}, 32, config=tiny_config(num_hidden_layers=4), decode_channels=16, auxiliary_channels=8
    )
    models["segmentation"].eval()
    save_segmentation_model(models["segmentation"], str(root / "segmentation"), segmentation_image_processor(32))
    cache = root / "cache"
    for name, repo_id in REPOS.items():
        put_in_hub_cache(root / name, cache, repo_id)
    generator = torch.Generator().manual_seed(0)
    inputs = {"pixel_values": torch.randn(2, 3, 32, 32, generator=generator), "noise": torch.rand(2, 16)}
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    torch.save(inputs, root / "inputs.pt")
    image.save(root / "image.png")
    return root, cache, models, inputs, image


def expected_outputs(models, inputs, image) -> dict:
    with torch.no_grad():
        return {
            "pretrained": models["pretrained"](inputs["pixel_values"], noise=inputs["noise"]).logits,
            "classifier": models["classifier"](inputs["pixel_values"]).logits,
            "segmentation": models["segmentation"](inputs["pixel_values"]).logits,
            "pixels": eval_image_processor(32)(image, return_tensors="pt").pixel_values,
        }


def test_the_cache_is_read_offline_by_repo_id(hub):
    root, cache, _, _, _ = hub
    assert huggingface_hub.constants.HF_HUB_OFFLINE  # conftest.py; nothing here may fall back to a download
    folder = huggingface_hub.snapshot_download(REPOS["classifier"], cache_dir=cache)
    assert Path(folder).parent.parent.name == "models--supmae-tests--tiny-classifier"
    assert (Path(folder) / "model.safetensors").is_symlink()


def test_repo_ids_load_through_import_supmae(hub):
    _, cache, models, inputs, image = hub
    expected = expected_outputs(models, inputs, image)
    pretrained = AutoModelForPreTraining.from_pretrained(REPOS["pretrained"], cache_dir=cache).eval()
    classifier = AutoModelForImageClassification.from_pretrained(REPOS["classifier"], cache_dir=cache).eval()
    segmenter = AutoModelForSemanticSegmentation.from_pretrained(REPOS["segmentation"], cache_dir=cache).eval()
    processor = AutoImageProcessor.from_pretrained(REPOS["classifier"], cache_dir=cache)
    assert type(processor) is SupMAEImageProcessor and type(classifier) is SupMAEForImageClassification
    with torch.no_grad():
        torch.testing.assert_close(
            pretrained(inputs["pixel_values"], noise=inputs["noise"]).logits, expected["pretrained"], rtol=0, atol=0
        )
        torch.testing.assert_close(classifier(inputs["pixel_values"]).logits, expected["classifier"], rtol=0, atol=0)
        torch.testing.assert_close(segmenter(inputs["pixel_values"]).logits, expected["segmentation"], rtol=0, atol=0)
    torch.testing.assert_close(processor(image, return_tensors="pt").pixel_values, expected["pixels"], rtol=0, atol=0)
    assert segmenter.backbone.out_features == ["stage1", "stage2", "stage3", "stage4"]


def test_a_pretraining_repo_id_starts_fine_tuning_and_segmentation(hub):
    """Our own loading code with Hub arguments: a classifier and a UperNet from the pretraining repository."""
    _, cache, models, _, _ = hub
    encoder = models["pretrained"].supmae.state_dict()
    classifier = SupMAEForImageClassification.from_pretrained(REPOS["pretrained"], num_labels=3, cache_dir=cache)
    assert classifier.config.num_labels == 3
    for key, tensor in classifier.supmae.state_dict().items():
        torch.testing.assert_close(tensor, encoder[key], rtol=0, atol=0)
    segmenter, report = segmentation_model(REPOS["pretrained"], {0: "a", 1: "b"}, 32, cache_dir=cache)
    assert "reused the encoder" in report
    block = "supmae.layers.1.mlp.fc2.weight"
    torch.testing.assert_close(segmenter.backbone.state_dict()[block], encoder[block.removeprefix("supmae.")])


REMOTE_CODE_LOADS = """
import json
import sys

import torch
from PIL import Image
from transformers import (
    AutoImageProcessor, AutoModelForImageClassification, AutoModelForPreTraining, AutoModelForSemanticSegmentation,
)

repos, root = json.loads(sys.argv[1]), sys.argv[2]
inputs = torch.load(f"{root}/inputs.pt")
image = Image.open(f"{root}/image.png")
pretrained = AutoModelForPreTraining.from_pretrained(repos["pretrained"], trust_remote_code=True).eval()
classifier = AutoModelForImageClassification.from_pretrained(repos["classifier"], trust_remote_code=True).eval()
segmenter = AutoModelForSemanticSegmentation.from_pretrained(repos["segmentation"], trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(repos["classifier"], trust_remote_code=True)
with torch.no_grad():
    outputs = {
        "pretrained": pretrained(inputs["pixel_values"], noise=inputs["noise"]).logits,
        "classifier": classifier(inputs["pixel_values"]).logits,
        "segmentation": segmenter(inputs["pixel_values"]).logits,
        "pixels": processor(image, return_tensors="pt").pixel_values,
    }
outputs["modules"] = sorted({type(m).__module__ for m in (pretrained, classifier, segmenter, processor)})
outputs["supmae"] = sorted(name for name in sys.modules if name.split(".")[0] == "supmae")
torch.save(outputs, f"{root}/outputs.pt")
"""


@pytest.mark.slow
def test_repo_ids_load_as_remote_code_without_the_package(hub, tmp_path):
    root, cache, models, inputs, image = hub
    env = {"HF_HUB_CACHE": str(cache), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = run_without_supmae(REMOTE_CODE_LOADS, json.dumps(REPOS), root, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    outputs = torch.load(root / "outputs.pt")
    assert outputs.pop("supmae") == []
    modules = outputs.pop("modules")
    # Transformers keeps remote code from the Hub under transformers_modules/<org>/<name>/<commit>.
    assert all(module.startswith("transformers_modules.supmae_hyphen_tests.") for module in modules), modules
    for name, tensor in expected_outputs(models, inputs, image).items():
        torch.testing.assert_close(outputs[name], tensor, rtol=0, atol=0, msg=name)
