# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
The paper's robustness evaluation of an ImageNet-1k classifier: ImageNet-C (15 corruptions x 5 severities, the mCE),
ImageNet-A and -R (restricted to their 200 classes), ImageNet-Sketch and the clean validation set, and the table
that puts them beside the paper's MAE, DeiT and SupMAE numbers.

run_classification.py wires it in: `robustness_sets` adds the clean, -A, -R and -Sketch sets to the evaluation sets,
and `evaluate_robustness` then runs ImageNet-C (all of its sets in one prediction pass) and writes the table.
"""

import copy
import importlib.util
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.classes import WORDNET_ID, imagenet_synsets, label_map_for, labels_to_model_space, load_class_subset
from ..data.sources import IMAGE_EXTENSIONS, class_names, load_labelled_split
from ..data.transforms import eval_image_processor, normalize_uint8
from ..image_processing_supmae import SupMAEImageProcessor
from ..metrics import (
    IMAGENET_C_CORRUPTIONS,
    IMAGENET_C_EXTRA_CORRUPTIONS,
    IMAGENET_C_SEVERITIES,
    UNLABELED,
    mean_corruption_error,
    topk_accuracy,
)
from ..training.files import path_inside, write_report, write_text
from .evaluation_sets import evaluation_set, parse_eval_spec


logger = logging.getLogger(__name__)

# The sets of the robustness table besides ImageNet-C: name -> the argument that gives its source.
ROBUSTNESS_SETS = {
    "imagenet-val": "imagenet_val",
    "imagenet-a": "imagenet_a",
    "imagenet-r": "imagenet_r",
    "imagenet-sketch": "imagenet_sketch",
}
# ImageNet-A and -R cover 200 of the 1000 classes; only those logits compete (Hendrycks' evaluation code).
DEFAULT_SUBSETS = {"imagenet-a": "imagenet-a", "imagenet-r": "imagenet-r"}

# The SupMAE paper's robustness table (and its README): ViT-B/16 models fine-tuned on ImageNet-1k. IN-C is the mCE
# (percent, lower is better); the others are top-1 accuracy (percent). MAE's row is the MAE README's.
REPORTED_ROBUSTNESS = {
    "MAE": {"imagenet-c": 51.7, "imagenet-a": 35.9, "imagenet-r": 48.3, "imagenet-sketch": 34.5},
    "DeiT": {"imagenet-c": 47.4, "imagenet-a": 27.9, "imagenet-r": 45.3, "imagenet-sketch": 32.0},
    "SupMAE": {"imagenet-c": 48.1, "imagenet-a": 35.5, "imagenet-r": 51.0, "imagenet-sketch": 36.0},
}


@dataclass
class RobustnessArguments:
    """run_classification.py's robustness evaluation. Each set: SOURCE[,split=S][,config=C][,image_column=C]..."""

    imagenet_c: str | None = field(
        default=None,
        metadata={
            "help": "ImageNet-C: DIR/<corruption>/<severity>/<wnid>/*.JPEG, or a source template with {corruption} "
            "and {severity} (one dataset per set). Reports each error, CE and the mCE."
        },
    )
    imagenet_val: str | None = field(default=None, metadata={"help": "Robustness table: clean ImageNet-1k val."})
    imagenet_a: str | None = field(default=None, metadata={"help": "Robustness table: ImageNet-A (200 classes)."})
    imagenet_r: str | None = field(default=None, metadata={"help": "Robustness table: ImageNet-R (200 classes)."})
    imagenet_sketch: str | None = field(default=None, metadata={"help": "Robustness table: ImageNet-Sketch."})
    corrupt: str | None = field(
        default=None,
        metadata={
            "help": "Also evaluate every evaluation set corrupted on the fly (imagecorruptions-imaug): 'all', "
            "'benchmark' (ImageNet-C's 15) or names such as gaussian_noise,fog."
        },
    )
    corrupt_severities: str = field(default="1,2,3,4,5", metadata={"help": "The severities of --corrupt."})


def requested(args: RobustnessArguments) -> bool:
    """Whether the arguments ask for any part of the robustness evaluation."""
    return bool(args.imagenet_c or args.corrupt) or any(getattr(args, arg) for arg in ROBUSTNESS_SETS.values())


# ---------------------------------------------------------------------------------------------------------------
# ImageNet labels
# ---------------------------------------------------------------------------------------------------------------


def check_imagenet_classes(config, what: str) -> None:
    """Refuse a model whose classes are not ImageNet-1k's 1000, in the standard sorted-synset order."""
    if config.num_labels != 1000:
        raise ValueError(
            f"{what} is labelled with ImageNet-1k's 1000 classes (WordNet ids, in sorted order), but the model has "
            f"num_labels={config.num_labels}. Evaluate a model fine-tuned on ImageNet-1k."
        )
    names = [str(config.id2label[i]) for i in range(1000)]
    if all(WORDNET_ID.fullmatch(name) for name in names) and names != imagenet_synsets():
        first = next(i for i, (a, b) in enumerate(zip(names, imagenet_synsets(), strict=True)) if a != b)
        raise ValueError(
            f"The model's classes are WordNet ids in another order than ImageNet's sorted one (class {first} is "
            f"{names[first]}, not {imagenet_synsets()[first]}); {what} is labelled in the sorted order."
        )


def _unnamed_classes(config) -> bool:
    return all(str(config.id2label[i]) == f"LABEL_{i}" for i in range(config.num_labels))


def imagenet_label_map(dataset, label_column, config, subset=None, labels_in_subset=False) -> dict[int, int] | None:
    """
    How an ImageNet-variant's labels become the model's class indices. Classes named by WordNet ids (image folders of
    the released sets: `n01440764/...`) map through ImageNet's sorted synset order. Otherwise, as any evaluation set
    (`label_map_for`: by class name, or the labels as they are), except for a model without class names, whose
    classes are taken to be ImageNet's in the standard order. With a class subset (ImageNet-A / -R), the labels must
    lie in it.
    """
    names = class_names(dataset, label_column)
    if names and not all(WORDNET_ID.fullmatch(name) for name in names) and _unnamed_classes(config):
        # A model without class names (a converted official checkpoint says LABEL_0..999) cannot be matched by name:
        # the labels are taken as ImageNet's class indices (or subset positions), as ILSVRC/imagenet-1k numbers them.
        labels = sorted(set(dataset[label_column]))
        mapped = labels if subset is None else labels_to_model_space(labels, subset, labels_in_subset)
        return None if labels == mapped else dict(zip(labels, mapped, strict=True))
    if not names or not all(WORDNET_ID.fullmatch(name) for name in names):
        return label_map_for(dataset, label_column, config, subset, labels_in_subset)
    index = {synset: i for i, synset in enumerate(imagenet_synsets())}
    unknown = [name for name in names if name not in index]
    if unknown:
        raise ValueError(f"WordNet ids {unknown[:5]} are not ImageNet-1k classes.")
    mapping = {label: index[name] for label, name in enumerate(names)}
    if subset is not None:
        labels_to_model_space(list(mapping.values()), subset, labels_in_subset=False)  # raises outside the subset
    return mapping


def robustness_sets(
    args: RobustnessArguments, config, image_processor, bad_images, cache_dir=None
) -> list[tuple[str, object, list]]:
    """
    `(name, dataset, class subset)` for each of --imagenet_val, --imagenet_a, --imagenet_r and --imagenet_sketch
    given, to evaluate with the other evaluation sets (the standard transform). Each takes
    `SOURCE[,split=S][,config=C][,image_column=C][,label_column=C][,subset=SPEC][,labels_in_subset=true]`; -A and -R
    default to their 200-class subsets.
    """
    sets = []
    for name, argument in ROBUSTNESS_SETS.items():
        spec = getattr(args, argument)
        if not spec:
            continue
        check_imagenet_classes(config, f"--{argument}")
        spec = parse_eval_spec(f"{name}={spec}")
        dataset, image_column, label_column = load_labelled_split(
            spec["source"],
            spec.get("split"),
            spec.get("config"),
            cache_dir,
            spec.get("image_column"),
            spec.get("label_column"),
            what=f"--{argument} {spec['source']}",
            bad_images=bad_images,
        )
        subset_spec = spec.get("subset") or DEFAULT_SUBSETS.get(name)
        subset = load_class_subset(subset_spec, config.num_labels) if subset_spec else None
        label_map = imagenet_label_map(dataset, label_column, config, subset, spec.get("labels_in_subset", False))
        dataset = evaluation_set(dataset, image_column, label_column, image_processor, label_map, bad_images)
        sets.append((name, dataset, subset))
    return sets


# ---------------------------------------------------------------------------------------------------------------
# ImageNet-C
# ---------------------------------------------------------------------------------------------------------------

CORRUPTIONS = IMAGENET_C_CORRUPTIONS + IMAGENET_C_EXTRA_CORRUPTIONS


def imagenet_c_image_processor(image_size) -> SupMAEImageProcessor:
    """ImageNet-C's evaluation transform. Its files are already `Resize(256) + CenterCrop(224)` crops of the validation
    images, so Hendrycks' evaluation only center-crops them: the shorter side goes to `image_size` (a no-op for the
    224 px files and a 224 px model, whose pixels pass through unchanged), then the center crop."""
    return eval_image_processor(image_size, crop_fraction=1.0)


def _subfolders(folder: str) -> list[str]:
    return sorted(name for name in os.listdir(folder) if os.path.isdir(os.path.join(folder, name)))


def released_imagenet_c(root: str) -> dict[tuple[str, int], list[dict]]:
    """
    The images of the released layout, `root/<corruption>/<severity>/<wnid>/*.JPEG` (corruption folders may also sit
    one level down, in the tarballs' `noise/`, `blur/`, `weather/`, `digital/`, `extra/`).

    Returns:
        {(corruption, severity): [{"image": {"path", "bytes": None}, "label": ImageNet class index}, ...]}, sorted by
        path; corruptions in the benchmark's order, the extra ones after.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--imagenet_c {root!r} is not a directory.")
    folders = {name: os.path.join(root, name) for name in _subfolders(root) if name in CORRUPTIONS}
    for group in _subfolders(root):  # category folders
        for name in _subfolders(os.path.join(root, group)) if group not in CORRUPTIONS else []:
            if name in CORRUPTIONS:
                folders.setdefault(name, os.path.join(root, group, name))
    if not folders:
        raise ValueError(
            f"--imagenet_c {root!r} holds no corruption folders. Expected {root}/<corruption>/<severity 1-5>/<wnid>/"
            f"*.JPEG with <corruption> among {list(CORRUPTIONS)}; it holds {_subfolders(root)[:10]}."
        )
    synset_index = {synset: i for i, synset in enumerate(imagenet_synsets())}
    sets = {}
    for corruption in (c for c in CORRUPTIONS if c in folders):
        folder = folders[corruption]
        missing = [s for s in IMAGENET_C_SEVERITIES if not os.path.isdir(os.path.join(folder, str(s)))]
        if missing:
            raise ValueError(f"{folder} lacks the severity folders {missing}: each corruption has severities 1..5.")
        for severity in IMAGENET_C_SEVERITIES:
            items = []
            for wnid in _subfolders(os.path.join(folder, str(severity))):
                if wnid not in synset_index:
                    raise ValueError(
                        f"{os.path.join(folder, str(severity), wnid)}: {wnid!r} is not an ImageNet-1k WordNet id; class "
                        "folders are named like n01440764."
                    )
                class_folder = os.path.join(folder, str(severity), wnid)
                items += [
                    {"image": {"path": os.path.join(class_folder, file), "bytes": None}, "label": synset_index[wnid]}
                    for file in sorted(os.listdir(class_folder))
                    if file.lower().endswith(IMAGE_EXTENSIONS)
                ]
            if not items:
                raise ValueError(f"{os.path.join(folder, str(severity))} holds no images.")
            sets[corruption, severity] = items
    return sets


def _looks_local(source: str) -> bool:
    """A path rather than a Hub id (`user/name`, one slash)."""
    return os.path.exists(source) or source.startswith(("/", ".", "~")) or source.count("/") != 1


def templated_imagenet_c(template: str, cache_dir=None, bad_images=None) -> dict[tuple[str, int], tuple]:
    """
    ImageNet-C from one dataset per (corruption, severity), named by a template of the `--eval_datasets` form with
    `{corruption}` and `{severity}` in it, e.g. `user/imagenet-c-{corruption}-{severity},split=test` (Hub copies) or
    `/data/c/{corruption}_{severity}` (local folders or datasets). A (corruption, severity) whose dataset does not
    exist is left out.

    Returns:
        {(corruption, severity): (dataset, image column, label column)}.
    """
    sets = {}
    for corruption in CORRUPTIONS:
        for severity in IMAGENET_C_SEVERITIES:
            spec = parse_eval_spec("imagenet-c=" + template.format(corruption=corruption, severity=severity))
            if _looks_local(spec["source"]) and not os.path.exists(spec["source"]):
                continue
            try:
                sets[corruption, severity] = load_labelled_split(
                    spec["source"],
                    spec.get("split"),
                    spec.get("config"),
                    cache_dir,
                    spec.get("image_column"),
                    spec.get("label_column"),
                    bad_images=bad_images,
                )
            except FileNotFoundError:  # datasets' DatasetNotFoundError: no such Hub dataset
                continue
    if not sets:
        raise ValueError(f"--imagenet_c {template!r}: no dataset found for any corruption and severity.")
    return sets


def imagenet_c_datasets(
    spec: str, config, image_processor, bad_images, cache_dir=None
) -> dict[tuple[str, int], object]:
    """{(corruption, severity): evaluation dataset} for `--imagenet_c`: the released layout (a folder) or, when the
    spec holds `{corruption}`, one dataset per set (`templated_imagenet_c`)."""
    if "{corruption}" not in spec:
        files = released_imagenet_c(spec)
        return {
            key: evaluation_set(items, "image", "label", image_processor, None, bad_images)
            for key, items in files.items()
        }
    return {
        key: evaluation_set(
            dataset,
            image_column,
            label_column,
            image_processor,
            imagenet_label_map(dataset, label_column, config),
            bad_images,
        )
        for key, (dataset, image_column, label_column) in templated_imagenet_c(spec, cache_dir, bad_images).items()
    }


def top1_errors_in_one_pass(evaluator, datasets: dict, class_subset=None) -> dict:
    """
    The top-1 error of each of many evaluation sets from ONE prediction pass over all of them (one progress bar, the
    model loaded once): each set's predictions are the slice of the pass it occupies.

    Args:
        evaluator: a `SupMAEClassificationTrainer` over the model (its predictions are the top-k classes).
        datasets: {key: dataset of {"pixel_values", "labels"}}.
        class_subset: model classes that compete (ImageNet-A / -R), or None for all.

    Returns:
        {key: top-1 error (fraction)} and, under the key None, the number of images scored (an unreadable image's
        row, labelled -100, holds its place in its set's slice and is not counted).
    """
    keys = list(datasets)
    evaluator.set_class_subset(class_subset)
    prediction = evaluator.predict(
        torch.utils.data.ConcatDataset([datasets[k] for k in keys]), metric_key_prefix="corrupted"
    )
    ranked = prediction.predictions  # (N, k) classes, with the rows' losses after them
    ranked = ranked[0] if isinstance(ranked, (tuple, list)) else ranked
    bounds = np.cumsum([0] + [len(datasets[k]) for k in keys])
    errors = {
        key: 1.0 - topk_accuracy(ranked[start:end], prediction.label_ids[start:end], ks=(1,))["top1"]
        for key, start, end in zip(keys, bounds[:-1], bounds[1:], strict=True)
    }
    return {**errors, None: int((np.asarray(prediction.label_ids) != UNLABELED).sum())}


def by_corruption(datasets: dict[tuple[str, int], object], severities=IMAGENET_C_SEVERITIES) -> list[str]:
    """The corruptions of {(corruption, severity): ...}, in the benchmark's order; each must have every severity."""
    corruptions = [c for c in CORRUPTIONS if any(key[0] == c for key in datasets)]
    incomplete = [c for c in corruptions if any((c, s) not in datasets for s in severities)]
    if incomplete:
        raise ValueError(f"Corruptions {incomplete} lack some of the severities {list(severities)}.")
    return corruptions


def evaluate_imagenet_c(evaluator, datasets: dict[tuple[str, int], object], clean_error: float | None = None) -> dict:
    """
    ImageNet-C: the top-1 error of every (corruption, severity) set (`top1_errors_in_one_pass`), then
    `mean_corruption_error`.

    Args:
        evaluator: a `SupMAEClassificationTrainer` over the model.
        datasets: {(corruption, severity): dataset of {"pixel_values", "labels"}} (`imagenet_c_datasets`).
        clean_error: the model's clean top-1 error (fraction), for the relative mCE.

    Returns:
        `mean_corruption_error`'s keys (percent; `mCE` None unless all 15 corruptions are there), plus "errors":
        {corruption: [top-1 error at severities 1..5] (fractions)}, "top1": the mean top-1 over the benchmark's sets
        (fraction) and "num_samples".
    """
    corruptions = by_corruption(datasets)
    top1_errors = top1_errors_in_one_pass(evaluator, datasets)
    errors = {c: [top1_errors[c, s] for s in IMAGENET_C_SEVERITIES] for c in corruptions}
    result = mean_corruption_error(errors, clean_error, partial=True)
    benchmark = [e for c, values in errors.items() if c in IMAGENET_C_CORRUPTIONS for e in values]
    result.update(
        errors=errors, top1=1.0 - float(np.mean(benchmark)) if benchmark else None, num_samples=top1_errors[None]
    )
    for corruption, values in errors.items():
        ce = result["CE"].get(corruption)
        logger.info(
            f"imagenet-c {corruption}: top-1 error by severity {' '.join(f'{e:.4f}' for e in values)}"
            + (f", CE {ce:.1f}" if ce is not None else " (extra: not in the mCE)")
        )
    if result["missing"]:
        logger.warning(f"ImageNet-C lacks {result['missing']}: no mCE (it needs all 15 corruptions).")
    else:
        logger.info(f"imagenet-c: mCE {result['mCE']:.2f}, unnormalized mean error {result['mean_error']:.2f}%")
    return result


# ---------------------------------------------------------------------------------------------------------------
# Corrupted copies of any evaluation set, on the fly (--corrupt), with the imagecorruptions-imaug library
# ---------------------------------------------------------------------------------------------------------------


def corruption_names(spec: str) -> list[str]:
    """`--corrupt`: "all" (the 19 corruptions), "benchmark" (ImageNet-C's 15) or comma-separated names."""
    if spec == "all":
        return list(CORRUPTIONS)
    if spec == "benchmark":
        return list(IMAGENET_C_CORRUPTIONS)
    names = [name.strip() for name in spec.split(",")]
    unknown = [name for name in names if name not in CORRUPTIONS]
    if unknown:
        raise ValueError(
            f"--corrupt: unknown corruptions {unknown}; use 'all', 'benchmark' or some of {list(CORRUPTIONS)}."
        )
    return names


def corrupt_severities(spec: str) -> list[int]:
    """`--corrupt_severities`: comma-separated severities, some of 1..5."""
    allowed = {str(v): v for v in IMAGENET_C_SEVERITIES}
    severities = [allowed.get(s.strip()) for s in spec.split(",")]
    if None in severities:
        raise ValueError(f"--corrupt_severities takes some of 1..5, comma-separated; got {spec!r}.")
    return severities


def check_robustness_arguments(args: RobustnessArguments, eval_set_names: list[str]) -> None:
    """The robustness options' mistakes, found before anything is evaluated (ImageNet-C alone is 3.75M images): the
    --corrupt names and severities and its library, a local --imagenet_c that is not a directory, and evaluation set
    names that would collide (with each other, or with the reports named imagenet-c and corrupted-NAME)."""
    if args.corrupt:
        corruption_names(args.corrupt)
        corrupt_severities(args.corrupt_severities)
        if importlib.util.find_spec("imagecorruptions") is None:
            raise ValueError(
                "--corrupt needs the imagecorruptions-imaug package: pip install imagecorruptions-imaug "
                "(or pip install -e '.[corrupt]')."
            )
    if args.imagenet_c and "{corruption}" not in args.imagenet_c and not os.path.isdir(args.imagenet_c):
        raise ValueError(
            f"--imagenet_c {args.imagenet_c!r} is not a directory (nor a source template with "
            "{corruption} and {severity})."
        )
    names = list(eval_set_names)
    names += [name for name, option in ROBUSTNESS_SETS.items() if getattr(args, option)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    reserved = [name for name in names if name == "imagenet-c" or name.startswith("corrupted-")]
    if repeated or reserved:
        raise ValueError(
            f"Evaluation set names must be unique and not imagenet-c or corrupted-* (the names of the "
            f"robustness reports); got {repeated + reserved}."
        )


class CorruptingTransform:
    """
    The evaluation transform with a corruption of ImageNet-C in between, as ImageNet-C was made: resize and center
    crop (uint8), then the corruption (imagecorruptions-imaug, a maintained port of Hendrycks' code), then ImageNet
    normalization. (ImageNet-C also saved each image as a JPEG of quality 85; that step is left out here.) The
    corruption's randomness is seeded from each item's generator, so a set's corrupted copy is the same at every run.
    """

    def __init__(self, image_processor: SupMAEImageProcessor, corruption: str, severity: int):
        try:
            from imagecorruptions import corrupt
        except ImportError:
            raise ImportError(
                "--corrupt needs the imagecorruptions-imaug package: pip install imagecorruptions-imaug "
                "(or pip install -e '.[corrupt]')."
            ) from None
        self.corrupt, self.corruption, self.severity = corrupt, corruption, severity
        self.crop = SupMAEImageProcessor(
            size=image_processor.size,
            crop_size=image_processor.crop_size,
            crop_pct=image_processor.crop_pct,
            do_rescale=False,
            do_normalize=False,
        )

    def __call__(self, image, rng=None) -> torch.Tensor:
        pixels = self.crop(image, return_tensors="pt").pixel_values[0]  # (3, S, S), 0..255
        pixels = pixels.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        state = np.random.get_state()  # the library draws from numpy's global generator
        np.random.seed(rng.getrandbits(32) if rng is not None else 0)
        try:
            corrupted = self.corrupt(pixels, corruption_name=self.corruption, severity=self.severity)
        finally:
            np.random.set_state(state)
        corrupted = np.ascontiguousarray(np.clip(corrupted, 0, 255).astype(np.uint8))
        return normalize_uint8(torch.from_numpy(corrupted).permute(2, 0, 1))


def evaluate_corrupted(evaluator, name: str, dataset, subset, corruptions, severities, image_processor) -> dict:
    """
    One evaluation set under each corruption and severity, corrupted on the fly, in one prediction pass.

    Returns:
        {"errors": {corruption: [top-1 error per severity] (fractions)}, "corruption_errors": {corruption: mean
        error (percent)}, "mean_error": the mean over all (percent), "severities", "num_samples"}. No CE or mCE:
        AlexNet's normalizers belong to ImageNet-C's own files.
    """
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "transform"):
        raise ValueError(f"--corrupt: the evaluation set {name!r} is streamed; corrupted copies need map-style data.")
    copies = {}
    for corruption in corruptions:
        for severity in severities:
            copies[corruption, severity] = copy.copy(dataset)
            copies[corruption, severity].transform = CorruptingTransform(image_processor, corruption, severity)
    top1_errors = top1_errors_in_one_pass(evaluator, copies, subset)
    errors = {c: [top1_errors[c, s] for s in severities] for c in corruptions}
    for corruption, values in errors.items():
        logger.info(f"{name} + {corruption}: top-1 error by severity {' '.join(f'{e:.4f}' for e in values)}")
    return {
        "errors": errors,
        "corruption_errors": {c: 100 * float(np.mean(values)) for c, values in errors.items()},
        "mean_error": 100 * float(np.mean(list(errors.values()))),
        "severities": list(severities),
        "num_samples": top1_errors[None],
    }


# ---------------------------------------------------------------------------------------------------------------
# The robustness table
# ---------------------------------------------------------------------------------------------------------------

TABLE_COLUMNS = {  # key -> heading; all in percent
    "imagenet-val": "IN-val top-1",
    "imagenet-c": "IN-C mCE (lower is better)",
    "imagenet-a": "IN-A top-1",
    "imagenet-r": "IN-R top-1",
    "imagenet-sketch": "IN-Sketch top-1",
    "score": "Score",
}


def robustness_score(row: dict) -> float | None:
    """The paper's "Score": the mean of 100 - mCE, IN-A, IN-R and IN-Sketch top-1 (percent); None if one is missing."""
    values = [row.get(key) for key in ("imagenet-c", "imagenet-a", "imagenet-r", "imagenet-sketch")]
    if any(value is None for value in values):
        return None
    return (100 - values[0] + sum(values[1:])) / 4


def robustness_row(reports: dict[str, dict]) -> dict[str, float | None]:
    """Our row of the table (percent) from the evaluation reports: top-1 of the sets, the mCE of ImageNet-C."""
    row = {key: 100 * reports[key]["top1"] if key in reports else None for key in ROBUSTNESS_SETS}
    row["imagenet-c"] = reports["imagenet-c"]["mCE"] if "imagenet-c" in reports else None
    row["score"] = robustness_score(row)
    return {key: row[key] for key in TABLE_COLUMNS}


def robustness_table(reports: dict[str, dict], model: str) -> dict:
    """The table as data: our row, and the paper's rows with their Score computed the paper's way."""
    reported = {
        name: {key: values.get(key) for key in TABLE_COLUMNS} | {"score": robustness_score(values)}
        for name, values in REPORTED_ROBUSTNESS.items()
    }
    return {
        "columns": TABLE_COLUMNS,
        "ours": {"model": model, **robustness_row(reports)},
        "reported": reported,
        "note": "Percent. 'reported': the SupMAE paper's numbers for ViT-B/16 fine-tuned on ImageNet-1k, not "
        "measured here. Score = mean of (100 - IN-C mCE), IN-A, IN-R and IN-Sketch top-1.",
    }


def robustness_markdown(table: dict) -> str:
    """The table in Markdown, our row first, then the reported ones."""

    def cell(value):
        return "—" if value is None else f"{value:.1f}"

    rows = [(f"ours (`{table['ours']['model']}`)", table["ours"])]
    rows += [(f"{name} (reported)", values) for name, values in table["reported"].items()]
    header = "| model | " + " | ".join(table["columns"].values()) + " |"
    lines = [header, "|---" * (len(table["columns"]) + 1) + "|"]
    lines += [
        "| " + name + " | " + " | ".join(cell(values[key]) for key in table["columns"]) + " |" for name, values in rows
    ]
    return "\n".join(lines) + "\n\n" + table["note"] + "\n"


def write_robustness_table(output_dir: str, reports: dict[str, dict], model: str) -> dict:
    """Write `robustness.json` and `robustness.md` (each atomically) in `output_dir`; returns the table."""
    table = robustness_table(reports, model)
    write_report(os.path.join(output_dir, "robustness.json"), "robustness", table["ours"], table=table)
    write_text(os.path.join(output_dir, "robustness.md"), robustness_markdown(table))
    return table


def evaluate_robustness(
    evaluator,
    args: RobustnessArguments,
    output_dir: str,
    config,
    sets,
    reports,
    bad_images,
    cache_dir=None,
    model=None,
) -> dict:
    """
    After the evaluation sets `sets` (`robustness_sets` among them) gave `reports`: ImageNet-C when --imagenet_c is
    given (`imagenet_c.json`), corrupted copies of every set with --corrupt (`corrupted_NAME.json`), then the
    robustness table (`robustness.json`, `robustness.md`) when any of its sets was evaluated.
    Returns the new reports ({"imagenet-c": ...}, {"corrupted-NAME": ...}).
    """
    new = {}
    image_size = config.image_height_width
    if args.imagenet_c:
        check_imagenet_classes(config, "--imagenet_c")
        datasets = imagenet_c_datasets(
            args.imagenet_c, config, imagenet_c_image_processor(image_size), bad_images, cache_dir
        )
        clean = 1.0 - reports["imagenet-val"]["top1"] if "imagenet-val" in reports else None
        new["imagenet-c"] = evaluate_imagenet_c(evaluator, datasets, clean)
        if evaluator.is_world_process_zero():
            write_report(
                os.path.join(output_dir, "imagenet_c.json"),
                "imagenet-c",
                new["imagenet-c"],
                model=model,
                source=args.imagenet_c,
            )
    if args.corrupt:
        corruptions = corruption_names(args.corrupt)
        severities = corrupt_severities(args.corrupt_severities)
        for name, dataset, subset in sets:
            result = evaluate_corrupted(
                evaluator, name, dataset, subset, corruptions, severities, eval_image_processor(image_size)
            )
            result["top1"] = 1.0 - result["mean_error"] / 100  # the mean top-1 over the corrupted copies
            new[f"corrupted-{name}"] = result
            if evaluator.is_world_process_zero():
                write_report(
                    path_inside(output_dir, f"corrupted_{name}.json"),
                    name,
                    result,
                    model=model,
                    clean_top1=reports.get(name, {}).get("top1"),
                )
    if evaluator.is_world_process_zero() and ("imagenet-c" in new or any(key in reports for key in ROBUSTNESS_SETS)):
        table = write_robustness_table(output_dir, {**reports, **new}, model)
        logger.info("Robustness table (robustness.md):\n" + robustness_markdown(table))
    return new
