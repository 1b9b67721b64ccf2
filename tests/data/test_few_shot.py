"""supmae.data.few_shot: K images per class by a seed (all of a smaller class), and ELEVATER's held-out part."""

import numpy as np
import pytest

from supmae.data.few_shot import few_shot_indices, few_shot_split, multilabel_few_shot_indices


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


def test_a_class_with_fewer_images_than_shots_gives_all_of_them():
    """ELEVATER's sampler (vision-datasets' sample_few_shot_subset): at most K per class, all of a smaller class."""
    chosen = [FEW_SHOT_LABELS[i] for i in few_shot_indices(FEW_SHOT_LABELS, 6, seed=0)]
    assert {c: chosen.count(c) for c in set(chosen)} == {0: 6, 1: 5, 7: 6}
    with pytest.raises(ValueError, match="shots must be at least 1"):
        few_shot_indices(FEW_SHOT_LABELS, 0, seed=0)


LABELS = [c for c in range(4) for _ in range(30)]  # 4 classes x 30 images


@pytest.mark.parametrize("shots, held_per_class", [(2, 1), (5, 1), (20, 4), (50, 10)])
def test_few_shot_split_holds_out_a_fifth_of_every_class(shots, held_per_class):
    labels = [c for c in range(4) for _ in range(60)]
    train, held_out = few_shot_split(labels, shots, seed=0)
    assert not set(train) & set(held_out) and train == sorted(train) and held_out == sorted(held_out)
    for c in range(4):
        assert sum(labels[i] == c for i in held_out) == held_per_class
        assert sum(labels[i] == c for i in train) == shots - held_per_class
    assert few_shot_split(labels, shots, seed=0) == (train, held_out)  # deterministic
    assert few_shot_split(labels, shots, seed=1) != (train, held_out)


def test_few_shot_split_of_small_classes_holds_out_as_elevater_and_keeps_one_to_train():
    """ceil(fraction x the class's images) held out (ELEVATER's train_val_dataset), never the class's last image; a
    class with fewer than K images gives all of them."""
    labels = [0] * 30 + [1] * 7 + [2] * 1
    train, held_out = few_shot_split(labels, 10, seed=0)
    count = lambda indices, c: sum(labels[i] == c for i in indices)  # noqa: E731
    assert [(count(train, c), count(held_out, c)) for c in range(3)] == [(8, 2), (5, 2), (1, 0)]
    train, held_out = few_shot_split(labels, 10, seed=0, holdout_fraction=0.95)
    assert [(count(train, c), count(held_out, c)) for c in range(3)] == [(1, 9), (1, 6), (1, 0)]


def test_few_shot_split_needs_two_shots():
    with pytest.raises(ValueError, match="at least 2 per class"):
        few_shot_split(LABELS, 1, seed=0)


def test_multilabel_few_shot_gives_every_class_its_shots():
    rng = np.random.default_rng(0)
    label_sets = [sorted(set(rng.integers(0, 5, rng.integers(1, 3)).tolist())) for _ in range(200)]
    for seed in (0, 1):
        chosen = multilabel_few_shot_indices(label_sets, 4, seed)
        assert all(sum(c in label_sets[i] for i in chosen) >= 4 for c in range(5))
        assert len(chosen) <= 20  # images shared by classes count for each
        train, held_out = few_shot_split(label_sets, 4, seed)
        assert sorted(train + held_out) == chosen and len(held_out) == round(0.2 * len(chosen))
    # A class in fewer images than K gets all of them (class 2 is in one image).
    chosen = multilabel_few_shot_indices([[0], [0, 1], [1, 2], [0], [1]], 2, seed=0)
    assert 2 in chosen and all(sum(c in [[0], [0, 1], [1, 2], [0], [1]][i] for i in chosen) >= 2 for c in (0, 1))
