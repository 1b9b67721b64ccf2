"""The robustness evaluation: ImageNet-C's layout and mCE end to end, ImageNet-A / -R / -Sketch, and the table."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_config
from PIL import Image
from transformers import TrainingArguments

from supmae import SupMAEForImageClassification
from supmae.data.classes import imagenet_synsets, load_class_subset
from supmae.data.collators import ImageCollator
from supmae.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from supmae.metrics import ALEXNET_CORRUPTION_ERRORS, IMAGENET_C_CORRUPTIONS
from supmae.tasks import classification
from supmae.tasks.robustness import (
    REPORTED_ROBUSTNESS,
    evaluate_imagenet_c,
    imagenet_c_datasets,
    imagenet_c_image_processor,
    released_imagenet_c,
    robustness_markdown,
    robustness_score,
    robustness_table,
)
from supmae.training.classification import SupMAEClassificationTrainer


SYNSETS = imagenet_synsets()
IMAGENET_R = load_class_subset("imagenet-r")
# A rigged classifier: bias only, so every image gets the same ranking. PREDICTED is its top-1 overall; among
# ImageNet-R's 200 classes, R_PREDICTED wins (PREDICTED is not one of them). Far from 0 and 1, so that labels
# numbered by folder position (0, 1, ...) instead of ImageNet's synset order would not match them by accident.
PREDICTED = next(i for i in range(500, 1000) if i not in IMAGENET_R)
OTHER = PREDICTED + 1 if PREDICTED + 1 not in IMAGENET_R else PREDICTED + 2
R_PREDICTED, R_OTHER = IMAGENET_R[3], IMAGENET_R[7]


def rigged_classifier(path, num_labels=1000):
    model = SupMAEForImageClassification(tiny_config(num_labels=num_labels))
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        if num_labels == 1000:
            model.classifier.bias[PREDICTED] = 10.0
            model.classifier.bias[R_PREDICTED] = 5.0
    model.save_pretrained(path)
    return path


def write_classes(folder, counts: dict[int, int], size=32):
    """`counts[class index]` images in `folder/<wnid>/`, distinct random pixels each."""
    rng = np.random.default_rng(len(str(folder)))
    for index, count in counts.items():
        (folder / SYNSETS[index]).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / SYNSETS[index] / f"{i}.JPEG", quality=95)


def counts_for(corruption_index: int, severity: int) -> tuple[int, int]:
    """(right, wrong) images of one set: errors that differ across corruptions and grow with severity."""
    return 5 - severity % 5 if severity < 5 else 1, severity + corruption_index % 3


def write_imagenet_c(root, corruptions=IMAGENET_C_CORRUPTIONS + ("spatter",)):
    """The released layout; the noise corruptions sit in a `noise/` category folder, as in the tarballs."""
    for c, corruption in enumerate(corruptions):
        base = root / "noise" if corruption.endswith("_noise") else root
        for severity in range(1, 6):
            right, wrong = counts_for(c, severity)
            write_classes(base / corruption / str(severity), {PREDICTED: right, OTHER: wrong})
    return root


def expected_errors(corruptions=IMAGENET_C_CORRUPTIONS + ("spatter",)):
    errors = {}
    for c, corruption in enumerate(corruptions):
        errors[corruption] = [(w := counts_for(c, s)[1]) / (counts_for(c, s)[0] + w) for s in range(1, 6)]
    return errors


TINY_EVAL = [
    "--per_device_eval_batch_size",
    "64",
    "--report_to",
    "none",
    "--disable_tqdm",
    "true",
    "--use_cpu",
    "true",
    "--dataloader_num_workers",
    "0",
]


def test_imagenet_c_and_the_robustness_table_end_to_end(tmp_path):
    """The released ImageNet-C layout (15 corruptions + an extra one) plus clean, -R and -Sketch sets, through
    `run_classification.py --mode eval`: every set's error, the CE and mCE against a hand computation, the relative mCE
    from the clean error, -R restricted to its 200 classes, and the table with the Score."""
    model = rigged_classifier(tmp_path / "clf")
    write_imagenet_c(tmp_path / "imagenet-c")
    write_classes(tmp_path / "val", {PREDICTED: 3, OTHER: 1})  # clean error 1/4
    write_classes(tmp_path / "r", {R_PREDICTED: 2, R_OTHER: 3})  # within the 200 classes: top-1 2/5
    write_classes(tmp_path / "sketch", {PREDICTED: 1, R_PREDICTED: 4})  # unrestricted: top-1 1/5
    reports = classification.main(
        [
            "--mode",
            "eval",
            "--model_name_or_path",
            str(model),
            "--output_dir",
            str(tmp_path / "out"),
            "--imagenet_c",
            str(tmp_path / "imagenet-c"),
            "--imagenet_val",
            str(tmp_path / "val"),
            "--imagenet_r",
            str(tmp_path / "r"),
            "--imagenet_sketch",
            str(tmp_path / "sketch"),
            *TINY_EVAL,
        ]
    )

    errors = expected_errors()
    report = json.loads((tmp_path / "out" / "imagenet_c.json").read_text())["metrics"]
    for corruption, values in errors.items():
        assert report["errors"][corruption] == pytest.approx(values, abs=1e-12), corruption
    ce = {c: 100 * sum(errors[c]) / (5 * ALEXNET_CORRUPTION_ERRORS[c]) for c in IMAGENET_C_CORRUPTIONS}
    assert report["CE"] == pytest.approx(ce) and "spatter" not in report["CE"]
    assert report["mCE"] == pytest.approx(sum(ce.values()) / 15)
    assert report["corruption_errors"]["spatter"] == pytest.approx(100 * np.mean(errors["spatter"]))
    relative = [100 * (np.mean(errors[c]) - 0.25) / (ALEXNET_CORRUPTION_ERRORS[c] - 0.4348) for c in ce]
    assert report["relative_mCE"] == pytest.approx(np.mean(relative))
    assert report["num_samples"] == sum(sum(counts_for(c, s)) for c in range(16) for s in range(1, 6))

    assert reports["imagenet-val"]["top1"] == 0.75 and reports["imagenet-sketch"]["top1"] == 0.2
    assert reports["imagenet-r"]["top1"] == 0.4  # unrestricted it would be 0: PREDICTED is not an R class
    table = json.loads((tmp_path / "out" / "robustness.json").read_text())["table"]
    ours = table["ours"]
    assert ours["imagenet-c"] == pytest.approx(report["mCE"]) and ours["imagenet-a"] is None
    assert ours["imagenet-val"] == 75.0 and ours["imagenet-r"] == 40.0 and ours["imagenet-sketch"] == 20.0
    assert ours["score"] is None  # IN-A was not given
    markdown = (tmp_path / "out" / "robustness.md").read_text()
    assert f"| {report['mCE']:.1f} | — | 40.0 | 20.0 | — |" in markdown
    assert "| SupMAE (reported) | — | 48.1 | 35.5 | 51.0 | 36.0 | 43.6 |" in markdown


def test_one_prediction_pass_for_all_of_imagenet_c(tmp_path):
    """75 sets, one `predict` (one progress bar, one model): each set is its slice of the pass."""
    root = write_imagenet_c(tmp_path / "c", IMAGENET_C_CORRUPTIONS)
    model = SupMAEForImageClassification.from_pretrained(rigged_classifier(tmp_path / "clf"))
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        use_cpu=True,
        per_device_eval_batch_size=7,
        dataloader_num_workers=0,
    )
    evaluator = SupMAEClassificationTrainer(model=model, args=args, data_collator=ImageCollator(1000))
    calls = []
    predict = evaluator.predict
    evaluator.predict = lambda *a, **k: calls.append(1) or predict(*a, **k)
    datasets = imagenet_c_datasets(str(root), model.config, imagenet_c_image_processor(32), None)
    assert len(datasets) == 75
    result = evaluate_imagenet_c(evaluator, datasets)
    assert len(calls) == 1
    expected = expected_errors(IMAGENET_C_CORRUPTIONS)
    assert list(result["errors"]) == list(expected)
    for corruption, values in expected.items():
        assert result["errors"][corruption] == pytest.approx(values, abs=1e-12), corruption
    assert result["top1"] == pytest.approx(1 - np.mean(list(expected.values())))


def test_imagenet_c_from_a_template_of_sources(tmp_path):
    """One image folder per (corruption, severity), named by a template; a partial set reports no mCE."""
    for severity in range(1, 6):
        write_classes(tmp_path / f"fog-s{severity}", {PREDICTED: 2, OTHER: severity})
        write_classes(tmp_path / f"snow-s{severity}", {PREDICTED: 4, OTHER: 1})
    model = SupMAEForImageClassification.from_pretrained(rigged_classifier(tmp_path / "clf"))
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    evaluator = SupMAEClassificationTrainer(model=model, args=args, data_collator=ImageCollator(1000))
    template = str(tmp_path / "{corruption}-s{severity}")
    datasets = imagenet_c_datasets(template, model.config, imagenet_c_image_processor(32), None)
    assert sorted(datasets) == [(c, s) for c in ("fog", "snow") for s in range(1, 6)]
    result = evaluate_imagenet_c(evaluator, datasets)
    assert result["errors"]["fog"] == pytest.approx([s / (2 + s) for s in range(1, 6)])
    assert result["errors"]["snow"] == pytest.approx([0.2] * 5)
    assert result["mCE"] is None and len(result["missing"]) == 13
    assert result["CE"]["snow"] == pytest.approx(100 * 0.2 / ALEXNET_CORRUPTION_ERRORS["snow"])


def test_imagenet_c_files_are_center_cropped_not_resized(tmp_path):
    """Files at the model's size pass through pixel for pixel (Hendrycks: CenterCrop only), where the standard
    evaluation transform would resize them up (to size / 0.875) and crop."""
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    ours = imagenet_c_image_processor(32)(image, return_tensors="pt").pixel_values[0]
    expected = (torch.from_numpy(pixels).permute(2, 0, 1) / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / (
        torch.tensor(IMAGENET_STD).view(3, 1, 1)
    )
    torch.testing.assert_close(ours, expected.float(), atol=1e-6, rtol=0)
    from supmae.data.transforms import eval_image_processor

    standard = eval_image_processor(32)(image, return_tensors="pt").pixel_values[0]
    assert (standard - expected).abs().max() > 0.5


def test_imagenet_c_layout_errors_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        released_imagenet_c(str(tmp_path / "nowhere"))
    (tmp_path / "empty" / "Gaussian-Noise").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"holds no corruption folders.*gaussian_noise.*\['Gaussian-Noise'\]"):
        released_imagenet_c(str(tmp_path / "empty"))
    for severity in (1, 2, 4):
        write_classes(tmp_path / "gaps" / "fog" / str(severity), {PREDICTED: 1})
    with pytest.raises(ValueError, match=r"fog lacks the severity folders \[3, 5\]"):
        released_imagenet_c(str(tmp_path / "gaps"))
    for severity in range(1, 6):
        (tmp_path / "names" / "fog" / str(severity) / "goldfish").mkdir(parents=True)
    with pytest.raises(ValueError, match="'goldfish' is not an ImageNet-1k WordNet id"):
        released_imagenet_c(str(tmp_path / "names"))


def test_a_model_without_imagenets_classes_is_refused(tmp_path):
    write_imagenet_c(tmp_path / "c", ("fog",))
    model = rigged_classifier(tmp_path / "clf", num_labels=10)
    with pytest.raises(ValueError, match="--imagenet_c is labelled with ImageNet-1k's 1000 classes.*num_labels=10"):
        classification.main(
            [
                "--mode",
                "eval",
                "--model_name_or_path",
                str(model),
                "--output_dir",
                str(tmp_path / "out"),
                "--imagenet_c",
                str(tmp_path / "c"),
                *TINY_EVAL,
            ]
        )


def test_reported_rows_give_the_papers_scores():
    """The paper's Score: the mean of 100 - mCE, IN-A, IN-R, IN-Sketch (SupMAE 43.6, MAE 41.8)."""
    assert round(robustness_score(REPORTED_ROBUSTNESS["SupMAE"]), 1) == 43.6
    assert round(robustness_score(REPORTED_ROBUSTNESS["MAE"]), 2) == 41.75
    assert robustness_score({"imagenet-c": 40.0, "imagenet-a": 30.0, "imagenet-r": 50.0, "imagenet-sketch": 20.0}) == (
        (60 + 30 + 50 + 20) / 4
    )
    reports = {
        "imagenet-c": {"mCE": 40.0},
        "imagenet-a": {"top1": 0.3},
        "imagenet-r": {"top1": 0.5},
        "imagenet-sketch": {"top1": 0.2},
    }
    table = robustness_table(reports, "m")
    assert table["ours"]["score"] == pytest.approx(40.0) and table["ours"]["imagenet-val"] is None
    assert "| ours (`m`) | — | 40.0 | 30.0 | 50.0 | 20.0 | 40.0 |" in robustness_markdown(table)


# ------------------------------------------------------------------------------------- corruptions on the fly
def test_corrupting_transform_applies_the_librarys_corruption_reproducibly():
    pytest.importorskip("imagecorruptions")
    import random

    from supmae.data.transforms import eval_image_processor
    from supmae.tasks.robustness import CorruptingTransform

    image = Image.fromarray(np.full((40, 40, 3), 100, dtype=np.uint8))
    processor = eval_image_processor(32)
    clean = processor(image, return_tensors="pt").pixel_values[0]
    brighter = CorruptingTransform(processor, "brightness", 5)(image, random.Random(0))
    assert brighter.shape == clean.shape == (3, 32, 32)
    assert (brighter.mean() - clean.mean()).item() > 1.0  # brightness at severity 5 lifts every pixel
    noise = CorruptingTransform(processor, "gaussian_noise", 3)
    first, again = noise(image, random.Random(7)), noise(image, random.Random(7))
    torch.testing.assert_close(first, again)  # seeded from the item's generator
    assert not torch.equal(first, noise(image, random.Random(8)))
    assert (first - clean).abs().mean().item() > 0.1


def test_corrupted_copies_of_an_evaluation_set(tmp_path):
    """`--corrupt` evaluates every set under each corruption and severity in one pass; with the rigged (constant)
    classifier every copy has the clean set's error, which pins the bookkeeping."""
    pytest.importorskip("imagecorruptions")
    model = rigged_classifier(tmp_path / "clf")
    write_classes(tmp_path / "val", {PREDICTED: 3, OTHER: 1})
    reports = classification.main(
        [
            "--mode",
            "eval",
            "--model_name_or_path",
            str(model),
            "--output_dir",
            str(tmp_path / "out"),
            "--imagenet_val",
            str(tmp_path / "val"),
            "--corrupt",
            "gaussian_noise,fog",
            "--corrupt_severities",
            "1,5",
            *TINY_EVAL,
        ]
    )
    report = json.loads((tmp_path / "out" / "corrupted_imagenet-val.json").read_text())
    assert report["metrics"]["errors"] == {"gaussian_noise": [0.25, 0.25], "fog": [0.25, 0.25]}
    assert report["metrics"]["num_samples"] == 16 and report["clean_top1"] == 0.75
    assert reports["corrupted-imagenet-val"]["mean_error"] == 25.0
    with pytest.raises(ValueError, match=r"unknown corruptions \['fogg'\]"):
        classification.main(
            [
                "--mode",
                "eval",
                "--model_name_or_path",
                str(model),
                "--output_dir",
                str(tmp_path / "bad"),
                "--imagenet_val",
                str(tmp_path / "val"),
                "--corrupt",
                "fogg",
                *TINY_EVAL,
            ]
        )


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--corrupt", "fogg"], r"unknown corruptions \['fogg'\]"),
        (["--corrupt", "fog", "--corrupt_severities", "1,6"], "--corrupt_severities takes some of 1..5"),
        (["--imagenet_c", "NOWHERE"], "--imagenet_c '.*nowhere' is not a directory"),
        (["--eval_datasets", "imagenet-c=VAL"], r"not imagenet-c or corrupted-\*.*\['imagenet-c'\]"),
        (["--eval_datasets", "imagenet-val=VAL"], r"Evaluation set names must be unique.*\['imagenet-val'\]"),
    ],
)
def test_robustness_mistakes_fail_before_anything_is_evaluated(tmp_path, arguments, message, monkeypatch):
    """ImageNet-C alone is 3.75M images: a typo in --corrupt or --imagenet_c must not wait for the sets before it."""
    model = rigged_classifier(tmp_path / "clf")
    write_classes(tmp_path / "val", {PREDICTED: 1})
    monkeypatch.setattr(classification, "run", lambda *a, **k: pytest.fail("evaluated before the check"))
    arguments = [
        a.replace("NOWHERE", str(tmp_path / "nowhere")).replace("VAL", str(tmp_path / "val")) for a in arguments
    ]
    with pytest.raises(ValueError, match=message):
        classification.main(
            [
                "--mode",
                "eval",
                "--model_name_or_path",
                str(model),
                "--output_dir",
                str(tmp_path / "out"),
                "--imagenet_val",
                str(tmp_path / "val"),
                *arguments,
                *TINY_EVAL,
            ]
        )
    assert not (tmp_path / "out" / "eval_imagenet-val.json").exists()


def test_labels_of_imagenet_variants_reach_the_models_classes():
    """WordNet-id classes go through the sorted synset order; a named Hub copy (ILSVRC/imagenet-1k style, lemma
    names in the standard order) reaches a model without class names (a converted checkpoint: LABEL_i) by index."""
    import datasets

    from supmae.tasks.robustness import imagenet_label_map

    unnamed = tiny_config(num_labels=1000)
    wnids = datasets.Dataset.from_dict(
        {"label": [0, 1, 1]}, datasets.Features({"label": datasets.ClassLabel(names=[SYNSETS[7], SYNSETS[900]])})
    )
    assert imagenet_label_map(wnids, "label", unnamed) == {0: 7, 1: 900}
    lemmas = datasets.Dataset.from_dict(
        {"label": [5, 600]},
        datasets.Features({"label": datasets.ClassLabel(names=[f"lemma {i}" for i in range(1000)])}),
    )
    assert imagenet_label_map(lemmas, "label", unnamed) is None  # the labels are already the model's indices
    with pytest.raises(ValueError, match="not among the model's classes"):  # a named model must match by name
        imagenet_label_map(lemmas, "label", tiny_config(num_labels=1000, id2label={i: f"c{i}" for i in range(1000)}))
    positions = datasets.Dataset.from_dict(
        {"label": [0, 3]}, datasets.Features({"label": datasets.ClassLabel(names=[f"r{i}" for i in range(200)])})
    )
    assert imagenet_label_map(positions, "label", unnamed, IMAGENET_R, labels_in_subset=True) == {
        0: IMAGENET_R[0],
        3: IMAGENET_R[3],
    }
