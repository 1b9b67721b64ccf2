# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Evaluation pieces for image classification: top-k accuracy, restriction to a class subset (ImageNet-A / -R),
few-shot sampling over seeds and JSON reports. Plain numpy / torch, no network (the `evaluate` package would
fetch its metrics from the Hub)."""

import importlib.resources
import json
import os
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch


IGNORE_INDEX = -100  # labels the loss and the metrics skip, as in Transformers
# The 200-class evaluation sets whose class lists timm ships (0-based indices into the 1000 ImageNet classes).
CLASS_SUBSETS = {"imagenet-a": "imagenet_a_indices.txt", "imagenet-r": "imagenet_r_indices.txt"}
_WORDNET_ID = re.compile(r"n\d{8}")


# ---------------------------------------------------------------------------------------------------------------
# Top-k accuracy
# ---------------------------------------------------------------------------------------------------------------


def topk_predictions(logits: torch.Tensor, k: int = 5, class_subset: Sequence[int] | None = None) -> torch.LongTensor:
    """
    The `k` highest-scoring classes of each row, best first.

    Args:
        logits: (B, C) class scores.
        k: how many classes to keep; fewer if fewer compete.
        class_subset: model class indices (e.g. ImageNet-A's 200 of 1000); only these columns compete.

    Returns:
        (B, min(k, C')) class indices in the model's C-class space, C' = len(class_subset) or C.
    """
    if class_subset is None:
        return logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    subset = torch.as_tensor(class_subset, dtype=torch.long, device=logits.device)
    # Taking the subset's columns masks the others out; the positions found map back through `subset`.
    positions = logits[:, subset].topk(min(k, len(subset)), dim=-1).indices  # (B, k) positions in the subset
    return subset[positions]


def topk_logits_preprocessor(
    k: int = 5, class_subset: Sequence[int] | None = None
) -> Callable[[torch.Tensor, torch.Tensor], torch.LongTensor]:
    """
    `topk_predictions` as Trainer's `preprocess_logits_for_metrics(logits, labels)`: the evaluation loop then
    gathers (B, k) indices instead of (B, C) logits. A tuple of model outputs contributes its first (the logits).
    """

    def preprocess(logits, labels):
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        return topk_predictions(logits, k=k, class_subset=class_subset)

    return preprocess


def topk_accuracy(predictions, labels, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """
    Top-k accuracy of ranked predictions.

    Args:
        predictions: (N, k') class indices, best first (or (N,) top-1 predictions).
        labels: (N,) true classes in the same index space; `-100` marks samples to skip.
        ks: the k to report; a k above k' uses the k' columns there are.

    Returns:
        {"top1": fraction in [0, 1], "top5": ..., "num_samples": labelled samples counted}.
    """
    labels = np.asarray(labels).reshape(-1)
    keep = labels != IGNORE_INDEX
    if not keep.any():
        raise ValueError("No labelled samples: every label is -100 (or there are none).")
    predictions = np.asarray(predictions).reshape(len(labels), -1)
    predictions, labels = predictions[keep], labels[keep]
    hits = predictions == labels[:, None]  # (N, k') True where the true class sits
    metrics = {f"top{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}
    metrics["num_samples"] = int(keep.sum())
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# Class subsets
# ---------------------------------------------------------------------------------------------------------------


def _timm_info_file(name: str) -> str:
    return (importlib.resources.files("timm") / "data" / "_info" / name).read_text()


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in the standard (sorted) class order: position = class index."""
    return _timm_info_file("imagenet_synsets.txt").split()


def _parse_class(token, synset_index: dict[str, int] | None) -> tuple[int, dict[str, int] | None]:
    """One class index from an int or an int / WordNet id string; builds the synset lookup on first need."""
    if isinstance(token, str) and _WORDNET_ID.fullmatch(token.strip()):
        if synset_index is None:
            synset_index = {synset: i for i, synset in enumerate(imagenet_synsets())}
        if token.strip() not in synset_index:
            raise ValueError(f"WordNet id {token.strip()} is not one of the 1000 ImageNet classes.")
        return synset_index[token.strip()], synset_index
    if isinstance(token, bool) or not isinstance(token, (int, str)):
        raise ValueError(f"Class {token!r} is neither a class index nor a WordNet id (n01440764 style).")
    try:
        return int(token), synset_index
    except ValueError:
        raise ValueError(f"Class {token!r} is neither a class index nor a WordNet id (n01440764 style).") from None


def load_class_subset(spec: str, num_labels: int = 1000) -> list[int]:
    """
    The model class indices a dataset's classes correspond to, in the order given (position i of the list is
    class i of a dataset labelled by subset position).

    Args:
        spec: one of
            - a name in `CLASS_SUBSETS` ("imagenet-a", "imagenet-r": timm's 200-class lists);
            - a path to a .json file holding a list, or a text file of entries separated by whitespace or commas;
            - an inline comma-separated list ("1,5,9").
            Entries are class indices or WordNet ids (n01440764 style, mapped through ImageNet's sorted order).
        num_labels: the model's number of classes; every index must lie in [0, num_labels).

    Returns:
        list of distinct class indices.
    """
    if spec.lower() in CLASS_SUBSETS:
        tokens = _timm_info_file(CLASS_SUBSETS[spec.lower()]).split()
    elif os.path.isfile(spec):
        text = Path(spec).read_text()
        if spec.lower().endswith(".json"):
            tokens = json.loads(text)
            if not isinstance(tokens, list):
                raise ValueError(f"{spec} must hold a JSON list of class indices or WordNet ids.")
        else:
            tokens = text.replace(",", " ").split()
    elif all(_WORDNET_ID.fullmatch(t.strip()) or re.fullmatch(r"-?\d+", t.strip()) for t in spec.split(",")):
        tokens = spec.split(",")
    else:
        raise ValueError(
            f"Unknown class subset {spec!r}: not one of the names {sorted(CLASS_SUBSETS)}, an existing file, or a "
            "comma-separated list of class indices."
        )
    if not tokens:
        raise ValueError(f"The class subset {spec!r} is empty.")

    indices, synset_index = [], None
    for token in tokens:
        index, synset_index = _parse_class(token, synset_index)
        indices.append(index)
    if (spec.lower() in CLASS_SUBSETS or synset_index is not None) and num_labels != 1000:
        raise ValueError(f"{spec!r} names ImageNet-1k classes, but the model has num_labels={num_labels}.")
    bad = [i for i in indices if not 0 <= i < num_labels]
    if bad:
        raise ValueError(f"Class index {bad[0]} in {spec!r} is outside [0, {num_labels}).")
    seen = set()
    for i in indices:
        if i in seen:
            raise ValueError(f"Class index {i} appears more than once in {spec!r}.")
        seen.add(i)
    return indices


def labels_to_model_space(labels, class_subset: Sequence[int], labels_in_subset: bool) -> list[int]:
    """
    A dataset's labels as model class indices. `-100` (unlabelled) passes through unchanged.

    Args:
        labels: (N,) labels.
        class_subset: the model class indices of the dataset's classes (from `load_class_subset`).
        labels_in_subset: True if labels are positions in `class_subset` (0..len-1), mapped to
            `class_subset[label]`; False if they are already model indices, checked to be members of the subset.

    Returns:
        (N,) list of model class indices.
    """
    labels = [int(label) for label in labels]
    if labels_in_subset:
        for label in labels:
            if label != IGNORE_INDEX and not 0 <= label < len(class_subset):
                raise ValueError(f"Label {label} is not a position in the {len(class_subset)}-class subset.")
        return [label if label == IGNORE_INDEX else int(class_subset[label]) for label in labels]
    members = set(int(c) for c in class_subset)
    for label in labels:
        if label != IGNORE_INDEX and label not in members:
            raise ValueError(f"Label {label} is not in the class subset; are the labels subset positions?")
    return labels


# ---------------------------------------------------------------------------------------------------------------
# Few-shot runs
# ---------------------------------------------------------------------------------------------------------------


def few_shot_indices(labels: Sequence[int], shots: int, seed: int) -> list[int]:
    """
    A few-shot training subset: `shots` samples of every class in `labels` (-100 excluded), drawn uniformly without
    replacement with `np.random.default_rng(seed)`, classes visited in increasing order. A class with fewer samples
    gives all of them, as ELEVATER's sampler does (vision-datasets' `sample_few_shot_subset`).

    Args:
        labels: (N,) class labels.
        shots: samples per class, >= 1.
        seed: the draw's seed; the same seed gives the same subset.

    Returns:
        sorted list of sample indices into `labels`: min(shots, the class's samples) of each class.
    """
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}.")
    labels = np.asarray(labels).reshape(-1)
    classes, counts = np.unique(labels[labels != IGNORE_INDEX], return_counts=True)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == cls), size=min(shots, count), replace=False)
              for cls, count in zip(classes, counts, strict=True)]  # fmt: skip
    return sorted(int(i) for i in np.concatenate(chosen)) if chosen else []


def summarize_runs(results: list[dict[str, float]]) -> dict[str, dict]:
    """
    Mean and spread of a metric over runs (the few-shot tables' mean +- std over seeds).

    Args:
        results: one metrics dict per run, all with the same keys.

    Returns:
        {metric: {"mean": float, "std": float, "runs": [value per run]}}; std is the sample standard deviation
        (ddof=1) over two or more runs and 0.0 for one run.
    """
    if not results:
        raise ValueError("No runs to summarize.")
    summary = {}
    for key in results[0]:
        missing = [i for i, run in enumerate(results) if key not in run]
        if missing:
            raise ValueError(f"Run {missing[0]} has no metric {key!r}.")
        runs = [float(run[key]) for run in results]
        std = float(np.std(runs, ddof=1)) if len(runs) > 1 else 0.0
        summary[key] = {"mean": float(np.mean(runs)), "std": std, "runs": runs}
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------------------------


def _to_builtin(value):
    """JSON-ready copy: numpy / torch scalars become Python numbers, arrays lists, paths strings."""
    if isinstance(value, dict):
        return {str(k): _to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_builtin(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray, torch.Tensor)):
        return _to_builtin(value.tolist()) if getattr(value, "ndim", 0) else value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_report(path: str | os.PathLike, name: str, metrics: dict, **info) -> dict:
    """
    Write one dataset's JSON report {"dataset": name, "metrics": metrics, **info} atomically (`write_json`).

    Returns:
        the report as written (plain Python values).
    """
    return write_json(path, {"dataset": name, "metrics": metrics, **info})


def write_json(path: str | os.PathLike, value) -> object:
    """
    Write `value` as JSON atomically (`write_text`).

    Returns:
        the value as written (plain Python values).
    """
    value = _to_builtin(value)
    write_text(path, json.dumps(value, indent=2) + "\n")
    return value


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` atomically: a temporary file in the same folder, synced, replaces `path` only once complete, so
    an interrupted run leaves the old file or none, never a half-written one. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "x") as f:  # created with the usual permissions (umask), unlike mkstemp's 0600
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# ImageNet-C: corruption errors (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
# Corruptions and Perturbations", ICLR 2019)
# ---------------------------------------------------------------------------------------------------------------

# The benchmark's 15 corruptions, in the paper's order (noise, blur, weather, digital).
IMAGENET_C_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
# Released beside them as held-out corruptions: reported, never part of the mCE.
IMAGENET_C_EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
IMAGENET_C_SEVERITIES = (1, 2, 3, 4, 5)
# AlexNet's top-1 error on each corruption, averaged over the 5 severities (fractions): the mCE's normalizers, from
# Hendrycks & Dietterich, as used by AugMix's `compute_mce`.
ALEXNET_CORRUPTION_ERRORS = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640, "defocus_blur": 0.819880,
    "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572,
    "fog": 0.819324, "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}  # fmt: skip
# AlexNet's top-1 error on the clean validation set (fraction; the paper's appendix C): the relative mCE's baseline.
ALEXNET_CLEAN_ERROR = 0.4348


def mean_corruption_error(
    errors: dict[str, Sequence[float]], clean_error: float | None = None, partial: bool = False
) -> dict:
    """
    ImageNet-C's corruption errors. For corruption c, `CE_c = sum_s E_{s,c} / sum_s E^AlexNet_{s,c}` over the 5
    severities s (AlexNet's sum is 5 x its severity-averaged error), and `mCE` is the mean of CE_c over the 15
    benchmark corruptions. With the clean error, the relative version measures the degradation from clean:
    `relative CE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^AlexNet_{s,c} - E^AlexNet_clean)`.

    Args:
        errors: {corruption: top-1 errors at severities 1..5, fractions in [0, 1]}. The 15 benchmark corruptions;
            the 4 extra ones (`IMAGENET_C_EXTRA_CORRUPTIONS`) may be given too and are reported, outside the mCE.
        clean_error: the same model's top-1 error on the clean validation set (fraction), for the relative mCE.
        partial: accept fewer than the 15 corruptions; then `mCE` (and `relative_mCE`) is None and `missing`
            names the corruptions without errors.

    Returns:
        all in percent: {"mCE", "CE": {c: CE_c} (benchmark corruptions given), "mean_error": the unnormalized
        mean of the benchmark corruptions' errors, "corruption_errors": {c: mean error over severities} (every
        corruption given), "missing": [...]} and, with `clean_error`, "clean_error", "relative_mCE",
        "relative_CE": {c: ...}.
    """
    known = IMAGENET_C_CORRUPTIONS + IMAGENET_C_EXTRA_CORRUPTIONS
    unknown = sorted(set(errors) - set(known))
    if unknown:
        raise ValueError(f"Unknown ImageNet-C corruptions {unknown}; the known ones are {list(known)}.")
    for corruption, values in errors.items():
        if len(values) != len(IMAGENET_C_SEVERITIES):
            raise ValueError(f"{corruption}: {len(values)} errors given; one per severity 1..5 is needed.")
        if not all(0.0 <= float(v) <= 1.0 for v in values):
            raise ValueError(f"{corruption}: errors must be fractions in [0, 1], got {list(values)}.")
    if clean_error is not None and not 0.0 <= clean_error <= 1.0:
        raise ValueError(f"clean_error must be a fraction in [0, 1], got {clean_error}.")
    missing = [c for c in IMAGENET_C_CORRUPTIONS if c not in errors]
    if missing and not partial:
        raise ValueError(f"The mCE needs all 15 corruptions; no errors for {missing}.")

    average = {c: float(np.mean(errors[c])) for c in known if c in errors}  # severity-averaged, fractions
    benchmark = [c for c in IMAGENET_C_CORRUPTIONS if c in errors]
    ce = {c: 100 * average[c] / ALEXNET_CORRUPTION_ERRORS[c] for c in benchmark}
    result = {
        "mCE": None if missing else float(np.mean(list(ce.values()))),
        "CE": ce,
        "mean_error": 100 * float(np.mean([average[c] for c in benchmark])) if benchmark else None,
        "corruption_errors": {c: 100 * value for c, value in average.items()},
        "missing": missing,
    }
    if clean_error is not None:
        relative = {
            c: 100 * (average[c] - clean_error) / (ALEXNET_CORRUPTION_ERRORS[c] - ALEXNET_CLEAN_ERROR)
            for c in benchmark
        }
        result.update(
            clean_error=100 * clean_error,
            relative_CE=relative,
            relative_mCE=None if missing else float(np.mean(list(relative.values()))),
        )
    return result


# ---------------------------------------------------------------------------------------------------------------
# Transfer metrics (ELEVATER scores each dataset with one of these)
# ---------------------------------------------------------------------------------------------------------------

TRANSFER_METRICS = ("accuracy", "mean_per_class", "11point_mAP", "roc_auc")


def mean_per_class_accuracy(labels, predictions) -> float:
    """
    The mean over classes of the fraction of that class's samples predicted right (the mean recall; "balanced
    accuracy"), over the classes present in `labels`.

    Args:
        labels: (N,) true classes.
        predictions: (N,) predicted classes.

    Returns:
        a fraction in [0, 1].
    """
    labels, predictions = np.asarray(labels).reshape(-1), np.asarray(predictions).reshape(-1)
    if len(labels) == 0:
        raise ValueError("No samples to score.")
    return float(np.mean([np.mean(predictions[labels == c] == c) for c in np.unique(labels)]))


def eleven_point_average_precision(targets, scores) -> float:
    """
    PASCAL VOC 2007's 11-point interpolated mean average precision over classes. For each class, rank the samples by
    score; at each recall level r in {0, 0.1, ..., 1} take the highest precision reached at any recall >= r (0 if
    none); the class's AP is the mean of the 11 values. Samples with equal scores enter the ranking together (the
    precision-recall curve has one point per distinct score, as scikit-learn's; the VOC devkit ranks tied samples
    one by one in sort order, which makes its AP depend on that order). Without ties the two agree. Classes without
    a positive sample are left out.

    Args:
        targets: (N, C) multi-hot {0, 1} targets (or (N,) for one class).
        scores: (N, C) scores, higher meaning more likely (logits, probabilities).

    Returns:
        the mean over classes, a fraction in [0, 1].
    """
    targets, scores = np.asarray(targets), np.asarray(scores, dtype=np.float64)
    targets, scores = targets.reshape(len(targets), -1), scores.reshape(len(scores), -1)
    if targets.shape != scores.shape:
        raise ValueError(f"targets {targets.shape} and scores {scores.shape} differ in shape.")
    precisions = []
    for c in range(targets.shape[1]):
        positives = targets[:, c] > 0
        if not positives.any():
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        ranked_scores, ranked_hits = scores[order, c], positives[order]
        # Keep the last position of each run of equal scores: tied samples count all at once.
        last_of_tie = np.r_[ranked_scores[1:] != ranked_scores[:-1], True]
        true_positives = np.cumsum(ranked_hits)[last_of_tie]
        retrieved = np.flatnonzero(last_of_tie) + 1
        recall, precision = true_positives / positives.sum(), true_positives / retrieved
        levels = [precision[recall >= r].max() if (recall >= r).any() else 0.0 for r in np.linspace(0, 1, 11)]
        precisions.append(np.mean(levels))
    if not precisions:
        raise ValueError("No class has a positive sample: the mAP is undefined.")
    return float(np.mean(precisions))


def binary_roc_auc(labels, scores) -> float:
    """
    The area under the ROC curve of a binary problem: the probability that a random positive scores above a random
    negative, ties counting one half (the Mann-Whitney U statistic over the number of pairs).

    Args:
        labels: (N,) {0, 1} labels, both present.
        scores: (N,) scores of the positive class.

    Returns:
        a fraction in [0, 1].
    """
    from scipy.stats import rankdata

    labels, scores = np.asarray(labels).reshape(-1), np.asarray(scores, dtype=np.float64).reshape(-1)
    positives, negatives = int((labels == 1).sum()), int((labels == 0).sum())
    if positives + negatives != len(labels):
        raise ValueError(f"ROC-AUC needs 0/1 labels; got {sorted(set(labels.tolist()))[:10]}.")
    if positives == 0 or negatives == 0:
        raise ValueError("ROC-AUC needs both positive and negative samples.")
    ranks = rankdata(scores)  # 1-based, ties get their average rank
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def transfer_score(metric: str, logits, labels) -> float:
    """
    A transfer dataset's score from the model's outputs.

    Args:
        metric: one of `TRANSFER_METRICS`.
        logits: (N, C) class scores.
        labels: (N,) class indices, or (N, C) multi-hot targets for `11point_mAP`.

    Returns:
        a fraction in [0, 1]. `accuracy` and `mean_per_class` use the top-1 class; `11point_mAP` ranks by each
        class's logit (the same ranking as its sigmoid); `roc_auc` (two classes) ranks by logit_1 - logit_0 (the
        same ranking as the softmax probability of class 1).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if metric == "accuracy":
        return float(np.mean(logits.argmax(-1) == np.asarray(labels).reshape(-1)))
    if metric == "mean_per_class":
        return mean_per_class_accuracy(labels, logits.argmax(-1))
    if metric == "11point_mAP":
        return eleven_point_average_precision(labels, logits)
    if metric == "roc_auc":
        if logits.shape[-1] != 2:
            raise ValueError(f"roc_auc scores binary problems; the model has {logits.shape[-1]} classes.")
        return binary_roc_auc(labels, logits[:, 1] - logits[:, 0])
    raise ValueError(f"Unknown metric {metric!r}; choose one of {list(TRANSFER_METRICS)}.")


# ---------------------------------------------------------------------------------------------------------------
# Semantic segmentation (mmsegmentation's mIoU / mAcc / aAcc, `evaluate`'s mean_iou key names)
# ---------------------------------------------------------------------------------------------------------------


def segmentation_confusion_matrix(
    predictions: torch.Tensor, references: torch.Tensor, num_labels: int, ignore_index: int = 255
) -> torch.Tensor:
    """
    Pixel counts of (reference class, predicted class) pairs, on the tensors' device.

    Args:
        predictions: integer class map of any shape (e.g. `(H, W)` or `(B, H, W)`).
        references: the true classes, same shape; pixels equal to `ignore_index` are left out.
        num_labels: K, the number of classes.

    Returns:
        (K, K) int64 counts, rows = reference class, columns = predicted class.
    """
    if predictions.shape != references.shape:
        raise ValueError(f"A prediction of shape {tuple(predictions.shape)} for a reference of shape "
                         f"{tuple(references.shape)}: resize the prediction to the annotation first.")  # fmt: skip
    references, predictions = references.reshape(-1).long(), predictions.reshape(-1).long()
    labelled = references != ignore_index
    references, predictions = references[labelled], predictions[labelled]
    for name, values in (("reference", references), ("prediction", predictions)):
        bad = values[(values < 0) | (values >= num_labels)]
        if len(bad):
            raise ValueError(
                f"A {name} holds class {bad[0].item()}, outside the {num_labels} classes (0..{num_labels - 1}) and not "
                f"the ignore index {ignore_index}; are the labels reduced (ADE20K's 0 = 'other' ignored)?"
            )
    counts = torch.bincount(references * num_labels + predictions, minlength=num_labels * num_labels)
    return counts.reshape(num_labels, num_labels)


def metrics_from_confusion_matrix(confusion) -> dict:
    """
    mmsegmentation's metrics from a (K, K) confusion matrix accumulated over a whole set (rows = reference):

    - `per_category_iou`: TP / (TP + FP + FN), NaN for a class absent from both predictions and references;
    - `per_category_accuracy`: TP / (TP + FN), NaN for a class absent from the references;
    - `mean_iou` (mIoU), `mean_accuracy` (mAcc): their means over the classes that are not NaN;
    - `overall_accuracy` (aAcc): correctly classified pixels / labelled pixels.
    """
    confusion = np.asarray(torch.as_tensor(confusion).cpu(), dtype=np.float64)
    true_positives = np.diag(confusion)
    references, predictions = confusion.sum(axis=1), confusion.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = true_positives / (references + predictions - true_positives)
        accuracy = true_positives / references
        overall = true_positives.sum() / confusion.sum()
    return {
        "mean_iou": float(np.nanmean(iou)) if not np.isnan(iou).all() else float("nan"),
        "mean_accuracy": float(np.nanmean(accuracy)) if not np.isnan(accuracy).all() else float("nan"),
        "overall_accuracy": float(overall),
        "per_category_iou": iou.tolist(),
        "per_category_accuracy": accuracy.tolist(),
    }


def _cpu_tensor(values) -> torch.Tensor:
    return values.cpu() if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))


def segmentation_metrics(predictions, references, num_labels: int, ignore_index: int = 255) -> dict:
    """
    mIoU, mAcc and aAcc as mmsegmentation computes them: from ONE confusion matrix accumulated over the whole set,
    not averaged per image. Offline (`evaluate.load("mean_iou")` fetches its code from the Hub).

    Args:
        predictions: an iterable of 2-D integer class maps (numpy arrays or tensors), any sizes.
        references: the matching annotations, each the size of its prediction; `ignore_index` pixels are skipped.
        num_labels: the number of classes.

    Returns:
        `mean_iou`, `mean_accuracy`, `overall_accuracy` (floats in [0, 1]) and `per_category_iou`,
        `per_category_accuracy` (lists of K floats, NaN where a class cannot be scored: see
        `metrics_from_confusion_matrix`). The key names are those of `evaluate`'s mean_iou.
    """
    confusion = torch.zeros(num_labels, num_labels, dtype=torch.int64)
    count = 0
    for prediction, reference in zip(predictions, references, strict=True):
        prediction, reference = _cpu_tensor(prediction), _cpu_tensor(reference)
        confusion += segmentation_confusion_matrix(prediction, reference, num_labels, ignore_index)
        count += 1
    if count == 0 or confusion.sum() == 0:
        raise ValueError("No labelled pixel to score: no images, or every reference pixel is the ignore index.")
    return metrics_from_confusion_matrix(confusion)
