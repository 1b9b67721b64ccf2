# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Metrics as pure functions of predictions and labels (numpy / torch, offline: the `evaluate` package would fetch
its metrics from the Hub): top-k accuracy, the mean over runs, ImageNet-C's corruption errors, ELEVATER's transfer
metrics, segmentation's confusion-matrix metrics, and the Trainer `compute_metrics` of pretraining and
classification."""

from collections.abc import Callable, Sequence

import numpy as np
import torch


UNLABELED = -100  # labels the loss and the metrics skip, as in Transformers


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


def topk_and_loss_preprocessor(
    k: int = 5, class_subset: Sequence[int] | None = None
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.LongTensor, torch.Tensor]]:
    """
    `topk_logits_preprocessor`, and each row's cross-entropy over all the classes (0 where the label is -100):
    `((B, k) class indices, (B,) losses)`. `classification_metrics` then averages the loss over the scored images
    only, as it does the accuracy (Trainer's own evaluation loss weights each batch's mean by the batch's size,
    rows of unreadable images included).
    """
    topk = topk_logits_preprocessor(k, class_subset)

    def preprocess(logits, labels):
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if labels is None:
            return topk(logits, labels), logits.new_zeros(len(logits), dtype=torch.float32)
        losses = torch.nn.functional.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")
        return topk(logits, labels), losses * (labels != UNLABELED)

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
    keep = labels != UNLABELED
    if not keep.any():
        raise ValueError("No labelled samples: every label is -100 (or there are none).")
    predictions = np.asarray(predictions).reshape(len(labels), -1)
    predictions, labels = predictions[keep], labels[keep]
    hits = predictions == labels[:, None]  # (N, k') True where the true class sits
    metrics = {f"top{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}
    metrics["num_samples"] = int(keep.sum())
    return metrics


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


# The benchmark's 15 corruptions, in the paper's order (noise, blur, weather, digital).
IMAGENET_C_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)


# Released beside them as held-out corruptions: reported, never part of the mCE.
IMAGENET_C_EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")


IMAGENET_C_SEVERITIES = (1, 2, 3, 4, 5)


# AlexNet's top-1 error on each corruption, averaged over the 5 severities (fractions): the mCE's normalizers, from
# Hendrycks & Dietterich, as used by AugMix's `compute_mce`.
ALEXNET_CORRUPTION_ERRORS = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}


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
        raise ValueError(
            f"A prediction of shape {tuple(predictions.shape)} for a reference of shape "
            f"{tuple(references.shape)}: resize the prediction to the annotation first."
        )
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
    """`values` as a CPU tensor; a read-only array (`np.asarray` of a PIL image, say) is copied, which torch needs
    (it warns on a tensor over memory it may not write)."""
    if isinstance(values, torch.Tensor):
        return values.cpu()
    array = np.asarray(values)
    return torch.as_tensor(array if array.flags.writeable else array.copy())


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


def pretraining_metrics(prediction, supervised_loss_weight: float | None = None) -> dict[str, float]:
    """`reconstruction_loss` and `num_samples` over the scored images, and over the labeled ones among them
    `classification_loss` and `classification_accuracy`, from the per-image statistics of
    `SupMAETrainer.prediction_step` `(N, 4)`: [reconstruction loss, cross-entropy, correct, scored] (without the
    last column every image is scored). Given the model's `supervised_loss_weight`, also the evaluation `loss`:
    reconstruction + weight x classification, the training objective over the whole set."""
    stats, labels = np.asarray(prediction.predictions), np.asarray(prediction.label_ids)
    scored = stats[:, 3] > 0 if stats.shape[1] > 3 else np.ones(len(stats), dtype=bool)
    if not scored.any():
        raise ValueError("No image of the evaluation set could be read: every one was skipped (see the warnings).")
    metrics = {"reconstruction_loss": float(stats[scored, 0].mean()), "num_samples": int(scored.sum())}
    labeled = scored & (labels != UNLABELED)
    if labeled.any():
        metrics["classification_loss"] = float(stats[labeled, 1].mean())
        metrics["classification_accuracy"] = float(stats[labeled, 2].mean())
    if supervised_loss_weight is not None:
        classification = metrics.get("classification_loss", 0.0)
        metrics["loss"] = metrics["reconstruction_loss"] + supervised_loss_weight * classification
    return metrics


def classification_metrics(prediction) -> dict[str, float]:
    """top-1 / top-5 accuracy and `num_samples` from `topk_predictions` output (Trainer's `compute_metrics`), and the
    mean `loss` over the scored images when `topk_and_loss_preprocessor` gave the rows' losses."""
    predictions, losses = prediction.predictions, None
    if isinstance(predictions, (tuple, list)):
        predictions, losses = predictions
    metrics = topk_accuracy(predictions, prediction.label_ids, ks=(1, 5))
    if losses is not None:
        scored = np.asarray(prediction.label_ids).reshape(-1) != UNLABELED
        metrics["loss"] = float(np.asarray(losses).reshape(-1)[scored].mean())
    return metrics
