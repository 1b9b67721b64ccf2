"""Evaluation scores each readable image once and never in an unreadable one's place (issue 19, item 7): classification
and pretraining evaluation, the robustness pass over many sets, the linear probe's cached features and transfer's
test sets report the images they scored (`num_samples`), in one process and in two."""

import json
import os
import subprocess
import sys

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from helpers import SHAPES, tiny_config, write_shapes_folder

from supmae import SupMAEForImageClassification, SupMAEForPreTraining
from supmae.data.collators import ImageCollator, TransferCollator
from supmae.data.datasets import TransformedImageDataset
from supmae.data.images import SKIPPED_IMAGES, BadImageError, BadImagePolicy
from supmae.data.sources import load_image_split
from supmae.data.transforms import EvalTransform, eval_image_processor
from supmae.tasks import classification
from supmae.tasks.evaluation_sets import evaluation_set
from supmae.tasks.robustness import top1_errors_in_one_pass
from supmae.training.arguments import SupMAETrainingArguments
from supmae.training.classification import SupMAEClassificationTrainer, extract_features, scored_features
from supmae.training.pretraining import SupMAETrainer


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNREADABLE = ("circle/circle_0.png", "circle/circle_5.png", "triangle/triangle_12.png")
COMMON = ["--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--dataloader_num_workers", "0"]


def truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The issue's set: 40 images (14 circles, 13 squares, 13 triangles), 3 of them unreadable."""
    root = write_shapes_folder(tmp_path_factory.mktemp("forty") / "val", per_class=13)
    PIL.Image.open(root / "circle" / "circle_1.png").save(root / "circle" / "circle_13.png")
    for name in UNREADABLE:
        truncate(root / name)
    return root


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    torch.manual_seed(0)
    labels = dict(enumerate(SHAPES))
    model = SupMAEForImageClassification(
        tiny_config(num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()})
    )
    with torch.no_grad():  # confident, varied predictions: every image's loss its own
        model.classifier.weight.normal_(0, 3, generator=torch.Generator().manual_seed(1))
    directory = tmp_path_factory.mktemp("classifier") / "model"
    model.save_pretrained(directory)
    return directory


def by_hand(model, folder) -> dict:
    """top-1, loss and count over the readable images, each once: the model on each file's evaluation transform."""
    processor, correct, losses = eval_image_processor(32), [], []
    model.eval()
    for label, shape in enumerate(SHAPES):
        for path in sorted((folder / shape).iterdir()):
            if f"{shape}/{path.name}" in UNREADABLE:
                continue
            with torch.no_grad():
                logits = model(processor(PIL.Image.open(path), return_tensors="pt").pixel_values).logits
            correct.append(int(logits.argmax(-1)) == label)
            losses.append(float(torch.nn.functional.cross_entropy(logits, torch.tensor([label]))))
    return {"top1": float(np.mean(correct)), "loss": float(np.mean(losses)), "num_samples": len(correct)}


def evaluation_report(output, name="forty") -> dict:
    return json.loads((output / f"eval_{name}.json").read_text())["metrics"]


def test_classification_evaluation_scores_each_readable_image_once(folder, classifier, tmp_path):
    """The issue's report: num_samples 40 and circle_1.png (the next readable image) scored three times."""
    output = tmp_path / "eval"
    argv = ["--mode", "eval", "--model_name_or_path", str(classifier), "--output_dir", str(output)]
    classification.main([*argv, "--eval_datasets", f"forty={folder}", "--per_device_eval_batch_size", "4", *COMMON])
    report = evaluation_report(output)
    expected = by_hand(SupMAEForImageClassification.from_pretrained(classifier), folder)
    assert report["num_samples"] == expected["num_samples"] == 37
    assert report["top1"] == expected["top1"]
    # The loss is the mean over the 37 images. Batches of 4 against one image at a time: float32 rounding only.
    assert report["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    listed = (output / SKIPPED_IMAGES).read_text()
    assert all(str(folder / name) in listed for name in UNREADABLE)


@pytest.mark.slow
def test_two_processes_score_the_same_images_once(folder, classifier, tmp_path):
    """Trainer's prediction loop pads the last batches of two processes with repeated items and cuts them after
    gathering, by position: 40 items in batches of 3 per process leave 16 padded rows. The rows of unreadable images
    keep the positions, so the two processes report what one does."""
    reports = {}
    for processes in (1, 2):
        output = tmp_path / f"processes-{processes}"
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if processes > 1 else []
        command = [sys.executable, *launcher, os.path.join(ROOT, "run_classification.py"), "--mode", "eval"]
        command += ["--model_name_or_path", str(classifier), "--output_dir", str(output), *COMMON]
        command += ["--eval_datasets", f"forty={folder}", "--per_device_eval_batch_size", "3"]
        env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        reports[processes] = evaluation_report(output)
    assert reports[2]["num_samples"] == reports[1]["num_samples"] == 37
    assert reports[2]["top1"] == reports[1]["top1"]
    assert reports[2]["loss"] == pytest.approx(reports[1]["loss"], rel=1e-5)


def pretraining_trainer(tmp_path):
    torch.manual_seed(0)
    args = SupMAETrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to="none", use_cpu=True, disable_tqdm=True
    )
    return SupMAETrainer(
        model=SupMAEForPreTraining(tiny_config(num_labels=3)), args=args, data_collator=ImageCollator(3)
    )


def test_pretraining_evaluation_counts_only_the_scored_images(folder, tmp_path):
    """Against the same evaluation with the unreadable files replaced by readable ones (the same masks at the same
    positions): the metrics are those of that run's readable rows, per image; a substitute would move every image
    after an unreadable one and count it twice."""
    transform = EvalTransform(eval_image_processor(32))
    split = load_image_split(str(folder))
    policy = BadImagePolicy("skip", str(tmp_path / SKIPPED_IMAGES))
    evaluated = TransformedImageDataset(split, "image", "label", transform, bad_images=policy, substitute=False)
    metrics = pretraining_trainer(tmp_path / "a").evaluate(evaluated)

    repaired = tmp_path / "repaired"
    write_shapes_folder(repaired, per_class=14)  # other pictures, at the unreadable files' places
    reference_split = load_image_split(str(folder))
    replaced = {str(folder / name) for name in UNREADABLE}

    def repair(example):
        path = example["image"]["path"]
        if path in replaced:
            example["image"] = {"path": str(repaired / os.path.relpath(path, folder)), "bytes": None}
        return example

    reference_split = reference_split.cast_column("image", datasets.Image(decode=False))
    reference = TransformedImageDataset(reference_split.map(repair), "image", "label", transform, substitute=False)
    stats = pretraining_trainer(tmp_path / "b").predict(reference).predictions  # (40, 4)
    readable = np.array([value["path"] not in replaced for value in reference_split["image"]])
    labels = np.array(reference_split["label"])
    reconstruction = stats[readable, 0].mean()
    classification_loss = stats[readable, 1].mean()
    assert metrics["eval_num_samples"] == 37
    assert metrics["eval_reconstruction_loss"] == pytest.approx(reconstruction, rel=1e-6)
    assert metrics["eval_classification_loss"] == pytest.approx(classification_loss, rel=1e-6)
    assert metrics["eval_classification_accuracy"] == pytest.approx(stats[readable, 2].mean(), rel=1e-6)
    assert metrics["eval_loss"] == pytest.approx(reconstruction + 0.01 * classification_loss, rel=1e-6)
    assert (labels[readable] >= 0).all()


def test_an_evaluation_set_of_unreadable_files_stops_with_a_diagnosis(tmp_path, monkeypatch):
    monkeypatch.setattr("supmae.data.datasets.MAX_BAD_IMAGES_IN_A_ROW", 3)
    root = write_shapes_folder(tmp_path / "data", per_class=2)
    for path in root.glob("*/*.png"):
        truncate(path)
    dataset = evaluation_set(load_image_split(str(root)), "image", "label", eval_image_processor(32))
    assert dataset[0]["scored"] is False and dataset[1]["scored"] is False
    with pytest.raises(BadImageError, match=r"Items up to 2 are all unreadable images \(3 in a row\)"):
        dataset[2]


def test_the_robustness_pass_keeps_each_sets_slice_and_counts_the_scored_images(folder, classifier, tmp_path):
    """ImageNet-C's 75 sets are scored in one prediction pass, each set the slice of the pass it occupies."""
    model = SupMAEForImageClassification.from_pretrained(classifier)
    args = SupMAETrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to="none", use_cpu=True, disable_tqdm=True
    )
    evaluator = SupMAEClassificationTrainer(model=model, args=args, data_collator=ImageCollator(3))
    clean = write_shapes_folder(tmp_path / "clean", per_class=3)
    processor = eval_image_processor(32)
    sets = {
        name: evaluation_set(load_image_split(str(path)), "image", "label", processor)
        for name, path in (("forty", folder), ("clean", clean))
    }
    errors = top1_errors_in_one_pass(evaluator, sets)
    assert errors[None] == 37 + 9
    assert errors["forty"] == pytest.approx(1 - by_hand(model, folder)["top1"])
    assert errors["clean"] == pytest.approx(1 - evaluator.evaluate(sets["clean"])["eval_top1"])


def test_the_linear_probes_cached_features_leave_unreadable_images_out(folder, classifier, tmp_path):
    model = SupMAEForImageClassification.from_pretrained(classifier)
    args = SupMAETrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, disable_tqdm=True)
    images = evaluation_set(load_image_split(str(folder)), "image", "label", eval_image_processor(32))
    cache = extract_features(model, images, args, ImageCollator(3))
    scored = scored_features(cache)
    assert len(cache["labels"]) == 40 and len(scored["labels"]) == len(scored["features"]) == 37
    assert (scored["labels"] >= 0).all()
    expected = [
        label
        for label, shape in enumerate(SHAPES)
        for path in sorted((folder / shape).iterdir())
        if f"{shape}/{path.name}" not in UNREADABLE
    ]
    assert scored["labels"].tolist() == expected


def test_multi_label_rows_of_unreadable_images_are_marked_for_the_transfer_metrics():
    items = [
        {"pixel_values": torch.zeros(3, 2, 2), "labels": [0, 2], "scored": True},
        {"pixel_values": torch.zeros(3, 2, 2), "labels": -100, "scored": False},
    ]
    batch = TransferCollator(3, multi_label=True)(items)
    assert batch["labels"].tolist() == [[1.0, 0.0, 1.0], [-100.0, -100.0, -100.0]]
    assert batch["scored"].tolist() == [True, False]
