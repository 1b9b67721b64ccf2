"""supmae.evaluation: top-k accuracy, class subsets, few-shot sampling and reports, against hand-computed answers."""

import importlib.resources
import json
import os

import numpy as np
import pytest
import torch

from supmae.evaluation import (
    CLASS_SUBSETS,
    few_shot_indices,
    imagenet_synsets,
    labels_to_model_space,
    load_class_subset,
    summarize_runs,
    topk_accuracy,
    topk_logits_preprocessor,
    topk_predictions,
    write_report,
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


def test_labels_to_model_space_rejects_labels_outside_the_subset():
    with pytest.raises(ValueError, match="Label 1 is not in the class subset"):
        labels_to_model_space([0, 1, 2], SUBSET, labels_in_subset=False)
    with pytest.raises(ValueError, match="Label 3 is not a position in the 3-class subset"):
        labels_to_model_space([0, 3], SUBSET, labels_in_subset=True)


def test_trainer_preprocessor_takes_logits_and_labels():
    preprocess = topk_logits_preprocessor(k=2, class_subset=SUBSET)
    expected = topk_predictions(LOGITS, k=2, class_subset=SUBSET)
    assert torch.equal(preprocess(LOGITS, torch.tensor(LABELS)), expected)
    assert torch.equal(preprocess((LOGITS, torch.zeros(4, 8)), None), expected)  # model outputs as a tuple


# --- class subsets -------------------------------------------------------------------------------------------


def _timm_info(name):
    return (importlib.resources.files("timm") / "data" / "_info" / name).read_text().split()


@pytest.mark.parametrize("name", sorted(CLASS_SUBSETS))
def test_named_subsets_are_timms_200_classes(name):
    subset = load_class_subset(name)
    assert len(subset) == 200 and len(set(subset)) == 200
    assert subset == sorted(subset) and 0 <= subset[0] and subset[-1] < 1000
    # timm's indices are 0-based positions in the sorted ImageNet-1k synsets: mapping its synset list agrees.
    synsets = _timm_info("imagenet_synsets.txt")
    assert synsets == sorted(synsets) and len(set(synsets)) == 1000
    assert [synsets[i] for i in subset] == _timm_info(name.replace("-", "_") + "_synsets.txt")
    assert load_class_subset(name.upper()) == subset


def test_imagenet_synsets_are_the_standard_order():
    synsets = imagenet_synsets()
    assert len(synsets) == 1000 and synsets[0] == "n01440764" and synsets[-1] == "n15075141"


def test_subset_from_wordnet_id_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("n01484850\nn01440764\n\nn01443537\n")
    assert load_class_subset(str(path)) == [2, 0, 1]


def test_subset_from_index_file_json_and_inline(tmp_path):
    (tmp_path / "indices.txt").write_text("7 3,\n999\n")
    assert load_class_subset(str(tmp_path / "indices.txt")) == [7, 3, 999]
    (tmp_path / "classes.json").write_text(json.dumps([5, "n01443537", "12"]))
    assert load_class_subset(str(tmp_path / "classes.json")) == [5, 1, 12]
    assert load_class_subset("3, 1,4") == [3, 1, 4]
    assert load_class_subset("2,0", num_labels=3) == [2, 0]


def test_subset_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown class subset 'imagenet-x'.*imagenet-a.*imagenet-r"):
        load_class_subset("imagenet-x")
    with pytest.raises(ValueError, match="WordNet id n99999999 is not one of the 1000"):
        load_class_subset("n01440764,n99999999")
    with pytest.raises(ValueError, match=r"Class index 1000 .* outside \[0, 1000\)"):
        load_class_subset("1,1000")
    with pytest.raises(ValueError, match=r"Class index -1 .* outside \[0, 10\)"):
        load_class_subset("-1", num_labels=10)
    with pytest.raises(ValueError, match="Class index 3 appears more than once"):
        load_class_subset("3,4,3")
    with pytest.raises(ValueError, match="num_labels=10"):
        load_class_subset("imagenet-a", num_labels=10)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        load_class_subset(str(tmp_path / "empty.txt"))
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ValueError, match="is empty"):
        load_class_subset(str(tmp_path / "empty.json"))
    (tmp_path / "dict.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="must hold a JSON list"):
        load_class_subset(str(tmp_path / "dict.json"))
    (tmp_path / "words.txt").write_text("goldfish\n")
    with pytest.raises(ValueError, match="'goldfish' is neither a class index nor a WordNet id"):
        load_class_subset(str(tmp_path / "words.txt"))


# --- few-shot ------------------------------------------------------------------------------------------------

FEW_SHOT_LABELS = [0] * 10 + [1] * 5 + [7] * 8 + [-100] * 4  # three classes, four unlabelled samples


@pytest.mark.parametrize("shots", [1, 2, 5])
@pytest.mark.parametrize("seed", [0, 1, 123])
def test_few_shot_indices_take_exactly_shots_per_class(shots, seed):
    indices = few_shot_indices(FEW_SHOT_LABELS, shots, seed)
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    chosen = [FEW_SHOT_LABELS[i] for i in indices]
    assert {c: chosen.count(c) for c in set(chosen)} == {0: shots, 1: shots, 7: shots}
    assert indices == few_shot_indices(FEW_SHOT_LABELS, shots, seed)  # deterministic


def test_few_shot_indices_differ_across_seeds():
    draws = {tuple(few_shot_indices(FEW_SHOT_LABELS, 2, seed)) for seed in range(5)}
    assert len(draws) == 5


def test_few_shot_indices_error_names_the_short_class():
    with pytest.raises(ValueError, match="Class 1 has 5 images, fewer than shots=6"):
        few_shot_indices(FEW_SHOT_LABELS, 6, seed=0)
    with pytest.raises(ValueError, match="shots must be at least 1"):
        few_shot_indices(FEW_SHOT_LABELS, 0, seed=0)


def test_summarize_runs_by_hand():
    summary = summarize_runs([{"top1": 0.5, "top5": 0.9}, {"top1": 0.7, "top5": 0.9}, {"top1": 0.6, "top5": 0.9}])
    # top1: mean 0.6; deviations -0.1, 0.1, 0 -> sample variance 0.02 / 2 = 0.01 -> std 0.1.
    assert summary["top1"]["mean"] == pytest.approx(0.6) and summary["top1"]["std"] == pytest.approx(0.1)
    assert summary["top1"]["runs"] == [0.5, 0.7, 0.6]
    assert summary["top5"] == {"mean": pytest.approx(0.9), "std": pytest.approx(0.0), "runs": [0.9, 0.9, 0.9]}
    assert summarize_runs([{"top1": np.float32(0.25)}]) == {"top1": {"mean": 0.25, "std": 0.0, "runs": [0.25]}}
    with pytest.raises(ValueError, match="Run 1 has no metric 'top5'"):
        summarize_runs([{"top1": 0.5, "top5": 0.9}, {"top1": 0.7}])


# --- reports -------------------------------------------------------------------------------------------------


def test_write_report_content_and_parent_dirs(tmp_path):
    path = tmp_path / "reports" / "imagenet-a" / "report.json"
    metrics = {"top1": np.float32(0.5), "top5": torch.tensor(0.75), "num_samples": np.int64(4)}
    report = write_report(
        path, "imagenet-a", metrics, model="outputs/model", num_classes=200, class_subset="imagenet-a"
    )
    expected = {
        "dataset": "imagenet-a",
        "metrics": {"top1": 0.5, "top5": 0.75, "num_samples": 4},
        "model": "outputs/model",
        "num_classes": 200,
        "class_subset": "imagenet-a",
    }
    assert report == expected and json.loads(path.read_text()) == expected
    assert type(report["metrics"]["top1"]) is float and type(report["metrics"]["num_samples"]) is int
    assert os.listdir(path.parent) == ["report.json"]  # no temporary file left behind


def test_write_report_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "report.json"
    write_report(path, "old", {"top1": 0.1})
    write_report(path, "new", {"top1": 0.2})
    assert json.loads(path.read_text())["dataset"] == "new"
    with pytest.raises(TypeError):  # fails mid-write: the previous report stays, and no temporary file
        write_report(path, "broken", {"top1": 0.3}, extra=object())
    assert json.loads(path.read_text())["dataset"] == "new"
    assert os.listdir(tmp_path) == ["report.json"]
