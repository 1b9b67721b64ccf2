"""supmae.metrics, pure functions checked against hand computations and scikit-learn: top-k accuracy (within a class
subset too), the mean over runs, ImageNet-C's corruption errors, ELEVATER's transfer metrics, and the pretraining and
segmentation metrics."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, precision_recall_curve, roc_auc_score
from transformers import EvalPrediction

from supmae.data.classes import labels_to_model_space
from supmae.metrics import (
    ALEXNET_CORRUPTION_ERRORS,
    IMAGENET_C_CORRUPTIONS,
    IMAGENET_C_EXTRA_CORRUPTIONS,
    binary_roc_auc,
    eleven_point_average_precision,
    mean_corruption_error,
    mean_per_class_accuracy,
    pretraining_metrics,
    segmentation_metrics,
    summarize_runs,
    topk_accuracy,
    topk_logits_preprocessor,
    topk_predictions,
    transfer_score,
)


# Each row's ranking, best first, written out by hand (no ties).
LOGITS = torch.tensor(
    [
        [0.1, 0.9, 0.3, 0.5, 0.2, 0.0],  # 1, 3, 2, 4, 0, 5
        [0.8, 0.1, 0.2, 0.05, 0.7, 0.3],  # 0, 4, 5, 2, 1, 3
        [0.2, 0.3, 0.1, 0.4, 0.6, 0.9],  # 5, 4, 3, 1, 0, 2
        [0.5, 0.4, 0.9, 0.1, 0.0, 0.3],  # 2, 0, 1, 5, 3, 4
    ]
)
LABELS = [1, 4, 0, -100]  # the last sample is unlabelled and must not count


def test_topk_predictions_ranks_best_first():
    predictions = topk_predictions(LOGITS, k=3)
    assert predictions.dtype == torch.long
    assert predictions.tolist() == [[1, 3, 2], [0, 4, 5], [5, 4, 3], [2, 0, 1]]


def test_topk_predictions_with_k_above_the_number_of_classes_returns_them_all():
    assert topk_predictions(LOGITS, k=10).shape == (4, 6)


def test_topk_accuracy_by_hand():
    metrics = topk_accuracy(topk_predictions(LOGITS, k=5), LABELS, ks=(1, 3, 5))
    # top-1: only row 0 is right; top-3 adds row 1 (4 is second); top-5 adds row 2 (0 is fifth).
    assert metrics == {"top1": pytest.approx(1 / 3), "top3": pytest.approx(2 / 3), "top5": 1.0, "num_samples": 3}


def test_topk_accuracy_with_k_above_the_predicted_columns_uses_what_there_is():
    predictions = topk_predictions(LOGITS, k=2)  # [[1, 3], [0, 4], [5, 4], [2, 0]]
    assert topk_accuracy(predictions, LABELS) == {"top1": pytest.approx(1 / 3), "top5": pytest.approx(2 / 3)} | {
        "num_samples": 3
    }
    # (N,) top-1 predictions are one column.
    assert topk_accuracy(np.array([1, 0, 5, 2]), LABELS)["top5"] == pytest.approx(1 / 3)


def test_topk_accuracy_needs_a_labelled_sample():
    with pytest.raises(ValueError, match="No labelled samples"):
        topk_accuracy(np.zeros((2, 5)), [-100, -100])


SUBSET = [4, 0, 2]  # model classes of a 3-class dataset, deliberately unsorted: position 0 is class 4


def test_subset_restricts_the_competition_and_answers_in_model_space():
    # Among columns 0, 2, 4 only; row 0's best class overall (1, logit 0.9) is outside the subset.
    predictions = topk_predictions(LOGITS, k=5, class_subset=SUBSET)
    assert predictions.tolist() == [[2, 4, 0], [0, 4, 2], [4, 0, 2], [2, 0, 4]]
    assert 1 not in predictions[:, 0].tolist()


def test_subset_accuracy_is_the_same_for_subset_positions_and_model_indices():
    predictions = topk_predictions(LOGITS, k=5, class_subset=SUBSET)
    model_labels = [2, 4, 0, -100]
    positions = [2, 0, 1, -100]  # SUBSET.index of each model label
    mapped = labels_to_model_space(positions, SUBSET, labels_in_subset=True)
    assert mapped == model_labels
    assert labels_to_model_space(model_labels, SUBSET, labels_in_subset=False) == model_labels
    by_model = topk_accuracy(predictions, model_labels, ks=(1, 2, 5))
    assert by_model == topk_accuracy(predictions, mapped, ks=(1, 2, 5))
    assert by_model == {"top1": pytest.approx(1 / 3), "top2": 1.0, "top5": 1.0, "num_samples": 3}


def test_trainer_preprocessor_takes_logits_and_labels():
    preprocess = topk_logits_preprocessor(k=2, class_subset=SUBSET)
    expected = topk_predictions(LOGITS, k=2, class_subset=SUBSET)
    assert torch.equal(preprocess(LOGITS, torch.tensor(LABELS)), expected)
    assert torch.equal(preprocess((LOGITS, torch.zeros(4, 8)), None), expected)  # model outputs as a tuple


# --- the mean over runs --------------------------------------------------------------------------------------


def test_summarize_runs_by_hand():
    summary = summarize_runs([{"top1": 0.5, "top5": 0.9}, {"top1": 0.7, "top5": 0.9}, {"top1": 0.6, "top5": 0.9}])
    # top1: mean 0.6; deviations -0.1, 0.1, 0 -> sample variance 0.02 / 2 = 0.01 -> std 0.1.
    assert summary["top1"]["mean"] == pytest.approx(0.6) and summary["top1"]["std"] == pytest.approx(0.1)
    assert summary["top1"]["runs"] == [0.5, 0.7, 0.6]
    assert summary["top5"] == {"mean": pytest.approx(0.9), "std": pytest.approx(0.0), "runs": [0.9, 0.9, 0.9]}
    assert summarize_runs([{"top1": np.float32(0.25)}]) == {"top1": {"mean": 0.25, "std": 0.0, "runs": [0.25]}}
    with pytest.raises(ValueError, match="Run 1 has no metric 'top5'"):
        summarize_runs([{"top1": 0.5, "top5": 0.9}, {"top1": 0.7}])


# --- ImageNet-C mCE ------------------------------------------------------------------------------------------


def corruption_errors(seed=0):
    """Five random errors per benchmark corruption."""
    rng = np.random.default_rng(seed)
    return {c: rng.uniform(0.2, 0.9, 5).tolist() for c in IMAGENET_C_CORRUPTIONS}


def test_mce_by_hand():
    errors = corruption_errors()
    result = mean_corruption_error(errors)
    # CE_c = sum over severities of ours / the same sum for AlexNet, whose severity errors average to its normalizer.
    expected_ce = {c: 100 * sum(errors[c]) / (5 * ALEXNET_CORRUPTION_ERRORS[c]) for c in IMAGENET_C_CORRUPTIONS}
    assert result["CE"] == pytest.approx(expected_ce, rel=1e-12)
    assert result["mCE"] == pytest.approx(sum(expected_ce.values()) / 15, rel=1e-12)
    assert result["mean_error"] == pytest.approx(100 * sum(map(sum, errors.values())) / 75, rel=1e-12)
    assert result["missing"] == [] and "relative_mCE" not in result


def test_mce_of_alexnet_itself_is_100_and_of_half_its_errors_50():
    alexnet = {c: [ALEXNET_CORRUPTION_ERRORS[c]] * 5 for c in IMAGENET_C_CORRUPTIONS}
    assert mean_corruption_error(alexnet, clean_error=0.4348)["mCE"] == pytest.approx(100.0)
    assert mean_corruption_error(alexnet, clean_error=0.4348)["relative_mCE"] == pytest.approx(100.0)
    # Severities enter through their sum: the same mean spread over severities gives the same CE.
    spread = {c: [e - 0.05, e + 0.05, e, e - 0.03, e + 0.03] for c, [e, *_] in alexnet.items()}
    assert mean_corruption_error(spread)["mCE"] == pytest.approx(100.0)
    half = {c: [e / 2 for e in values] for c, values in alexnet.items()}
    assert mean_corruption_error(half)["mCE"] == pytest.approx(50.0)


def test_relative_mce_by_hand():
    errors = corruption_errors(1)
    clean = 0.2
    result = mean_corruption_error(errors, clean_error=clean)
    expected = {
        c: 100 * sum(e - clean for e in errors[c]) / (5 * (ALEXNET_CORRUPTION_ERRORS[c] - 0.4348))
        for c in IMAGENET_C_CORRUPTIONS
    }
    assert result["relative_CE"] == pytest.approx(expected, rel=1e-12)
    assert result["relative_mCE"] == pytest.approx(np.mean(list(expected.values())), rel=1e-12)
    assert result["clean_error"] == pytest.approx(20.0)


def test_extra_corruptions_are_reported_but_left_out_of_the_mce():
    errors = corruption_errors()
    with_extras = {**errors, **{c: [1.0] * 5 for c in IMAGENET_C_EXTRA_CORRUPTIONS}}
    result, plain = mean_corruption_error(with_extras), mean_corruption_error(errors)
    assert result["mCE"] == plain["mCE"] and result["mean_error"] == plain["mean_error"]
    assert set(result["CE"]) == set(IMAGENET_C_CORRUPTIONS)
    assert result["corruption_errors"]["spatter"] == 100.0 and len(result["corruption_errors"]) == 19


def test_mce_needs_every_corruption_unless_partial():
    errors = corruption_errors()
    del errors["fog"], errors["snow"]
    with pytest.raises(ValueError, match=r"needs all 15 corruptions; no errors for \['snow', 'fog'\]"):
        mean_corruption_error(errors)
    result = mean_corruption_error(errors, clean_error=0.3, partial=True)
    assert result["mCE"] is None and result["relative_mCE"] is None and result["missing"] == ["snow", "fog"]
    assert len(result["CE"]) == 13


def test_mce_input_errors_are_named():
    errors = corruption_errors()
    with pytest.raises(ValueError, match=r"Unknown ImageNet-C corruptions \['gaussian-noise'\]"):
        mean_corruption_error({**errors, "gaussian-noise": [0.5] * 5})
    with pytest.raises(ValueError, match="fog: 4 errors given; one per severity 1..5"):
        mean_corruption_error({**errors, "fog": [0.5] * 4})
    with pytest.raises(ValueError, match="fog: errors must be fractions"):
        mean_corruption_error({**errors, "fog": [50.0] * 5})  # percent by mistake
    with pytest.raises(ValueError, match="clean_error must be a fraction"):
        mean_corruption_error(errors, clean_error=23.5)


# --- transfer metrics against scikit-learn -------------------------------------------------------------------


def test_mean_per_class_accuracy_is_sklearns_balanced_accuracy():
    rng = np.random.default_rng(0)
    labels = rng.choice(5, size=300, p=[0.5, 0.2, 0.15, 0.1, 0.05])  # imbalanced: differs from plain accuracy
    predictions = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 5, 300))
    ours = mean_per_class_accuracy(labels, predictions)
    assert ours == pytest.approx(balanced_accuracy_score(labels, predictions), abs=1e-12)
    assert abs(ours - np.mean(labels == predictions)) > 0.01
    assert mean_per_class_accuracy([0, 0, 0, 1], [0, 0, 0, 0]) == 0.5  # by hand: class 0 all right, class 1 none


def sklearn_eleven_point_ap(targets, scores):
    """VOC 2007's 11-point AP from scikit-learn's precision-recall curve, averaged over classes (without the curve's
    added last point, recall 0 and precision 1, which the devkit does not have)."""
    aps = []
    for c in range(targets.shape[1]):
        precision, recall, _ = precision_recall_curve(targets[:, c], scores[:, c])
        precision, recall = precision[:-1], recall[:-1]
        aps.append(np.mean([precision[recall >= r].max() for r in np.linspace(0, 1, 11)]))
    return float(np.mean(aps))


@pytest.mark.parametrize("tied", [False, True])
def test_eleven_point_map_agrees_with_sklearns_precision_recall_curve(tied):
    rng = np.random.default_rng(1)
    targets = (rng.random((200, 6)) < 0.3).astype(int)
    scores = targets * rng.normal(1.0, 1.0, (200, 6)) + rng.normal(0.0, 1.0, (200, 6))
    scores[np.argmax(np.where(targets == 0, 1.0, -np.inf), axis=0), range(6)] = 9.0  # each class's top is a negative
    if tied:  # coarse scores: many ties, which must enter the ranking together
        scores = np.round(scores)
    ours = eleven_point_average_precision(targets, scores)
    assert ours == pytest.approx(sklearn_eleven_point_ap(targets, scores), abs=1e-12)
    assert 0.4 < ours < 0.95


def test_eleven_point_ap_by_hand():
    # Ranked hits: 1, 0, 1, 0 (2 positives). Recall/precision after each: (.5, 1), (.5, .5), (1, 2/3), (1, .5).
    # Levels 0..0.5 (6 of them) reach precision 1; levels 0.6..1 (5) reach 2/3: AP = (6 + 5 * 2/3) / 11.
    ap = eleven_point_average_precision([[1], [0], [1], [0]], [[0.9], [0.8], [0.7], [0.1]])
    assert ap == pytest.approx((6 + 5 * 2 / 3) / 11)
    # The top-ranked sample a negative: hits 0, 1, 0, 1. Points (0, 0), (.5, .5), (.5, 1/3), (1, .5): every level
    # reaches 0.5 at most, so AP = 0.5 (VOC 2007's devkit). ELEVATER's scorer, on scikit-learn's curve, also counts
    # the curve's added point (recall 0, precision 1) and gives (1 + 10 * 0.5) / 11 = 0.545.
    ap = eleven_point_average_precision([[0], [1], [0], [1]], [[0.9], [0.8], [0.7], [0.1]])
    assert ap == pytest.approx(0.5)
    # A class without positives is left out of the mean.
    assert eleven_point_average_precision([[1, 0], [0, 0]], [[0.9, 0.1], [0.1, 0.9]]) == 1.0
    with pytest.raises(ValueError, match="No class has a positive sample"):
        eleven_point_average_precision([[0], [0]], [[0.3], [0.2]])


def test_binary_roc_auc_is_sklearns():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 500)
    scores = np.round(labels * 0.8 + rng.normal(0, 1, 500), 1)  # rounded: ties count one half
    assert binary_roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    # By hand: positives 0.4, 0.8 against negatives 0.1, 0.5; only 0.4 < 0.5 of the 4 pairs is misordered.
    assert binary_roc_auc([0, 1, 0, 1], [0.1, 0.4, 0.5, 0.8]) == 0.75
    with pytest.raises(ValueError, match="needs both positive and negative"):
        binary_roc_auc([1, 1], [0.2, 0.3])


def test_transfer_score_dispatches_on_the_metric():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.5, 0.0], [0.0, 3.0]])
    labels = np.array([0, 1, 1, 1])
    assert transfer_score("accuracy", logits, labels) == 0.75
    assert transfer_score("mean_per_class", logits, labels) == pytest.approx((1 + 2 / 3) / 2)
    softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert transfer_score("roc_auc", logits, labels) == pytest.approx(roc_auc_score(labels, softmax[:, 1]))
    multi_hot = np.array([[1, 0], [0, 1], [1, 1], [0, 1]])
    assert transfer_score("11point_mAP", logits, multi_hot) == pytest.approx(
        sklearn_eleven_point_ap(multi_hot, logits)
    )
    with pytest.raises(ValueError, match="Unknown metric 'top1'"):
        transfer_score("top1", logits, labels)
    with pytest.raises(ValueError, match="roc_auc scores binary problems; the model has 3 classes"):
        transfer_score("roc_auc", np.zeros((2, 3)), [0, 1])


# --- pretraining and segmentation ----------------------------------------------------------------------------
def test_pretraining_metrics_by_hand():
    stats = np.array([[0.5, 2.0, 1.0], [0.5, 0.0, 0.0], [0.7, 1.0, 0.0], [0.7, 3.0, 1.0]])
    labels = np.array([3, -100, 1, 2])
    metrics = pretraining_metrics(EvalPrediction(predictions=stats, label_ids=labels))
    assert metrics == pytest.approx(
        {"reconstruction_loss": 0.6, "classification_loss": 2.0, "classification_accuracy": 2 / 3, "num_samples": 4}
    )
    unlabeled = pretraining_metrics(EvalPrediction(predictions=stats, label_ids=np.full(4, -100)))
    assert unlabeled == pytest.approx({"reconstruction_loss": 0.6, "num_samples": 4})


def test_segmentation_metrics_against_a_hand_built_confusion_matrix():
    """Two images of different sizes, one confusion matrix over both. Classes 0..3; 255 ignored; class 2 is only
    predicted (IoU 0, accuracy NaN); class 3 appears nowhere (NaN, out of the means)."""
    references = [np.array([[0, 0, 1], [1, 255, 0]]), np.array([[1, 1], [1, 0], [255, 255]])]
    predictions = [np.array([[0, 1, 1], [2, 0, 0]]), torch.tensor([[1, 1], [0, 0], [3, 3]])]
    # Counted by hand, reference -> prediction over the 5 + 4 labelled pixels:
    #   image 1: 0->0, 0->1, 1->1, 1->2, 0->0;  image 2: 1->1, 1->1, 1->0, 0->0.
    #   So reference 0: 4 pixels, 3 right; reference 1: 5 pixels, 3 right. Predicted 0: 4, 1: 4, 2: 1, 3: 0.
    metrics = segmentation_metrics(predictions, references, num_labels=4)
    iou = [3 / (4 + 4 - 3), 3 / (5 + 4 - 3), 0.0, float("nan")]
    accuracy = [3 / 4, 3 / 5, float("nan"), float("nan")]
    np.testing.assert_allclose(metrics["per_category_iou"], iou, rtol=1e-12)
    np.testing.assert_allclose(metrics["per_category_accuracy"], accuracy, rtol=1e-12)
    assert metrics["mean_iou"] == pytest.approx((iou[0] + iou[1] + 0.0) / 3, rel=1e-12)
    assert metrics["mean_accuracy"] == pytest.approx((3 / 4 + 3 / 5) / 2, rel=1e-12)
    assert metrics["overall_accuracy"] == pytest.approx(6 / 9, rel=1e-12)
    # Not a mean of per-image scores: image 1 alone has aAcc 3/5, image 2 alone 3/4.
    assert metrics["overall_accuracy"] != pytest.approx((3 / 5 + 3 / 4) / 2)


def test_segmentation_metrics_refuse_labels_outside_the_classes():
    with pytest.raises(ValueError, match=r"A reference holds class 150, outside the 150 classes \(0..149\)"):
        segmentation_metrics([np.zeros((2, 2), int)], [np.full((2, 2), 150)], num_labels=150)
    with pytest.raises(ValueError, match="resize the prediction to the annotation"):
        segmentation_metrics([np.zeros((2, 2), int)], [np.zeros((2, 3), int)], num_labels=2)


def test_segmentation_metrics_take_read_only_arrays_without_a_warning():
    """`np.asarray` of a PIL image is read-only: the metrics must neither warn nor need the caller to copy it."""
    from PIL import Image

    annotation = np.asarray(Image.fromarray(np.array([[0, 1], [1, 255]], dtype=np.uint8)))
    assert not annotation.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = segmentation_metrics([annotation], [annotation], num_labels=2)
    assert metrics["overall_accuracy"] == 1.0 and metrics["mean_iou"] == 1.0
