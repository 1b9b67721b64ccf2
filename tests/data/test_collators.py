"""supmae.data.collators: items into batches with the labels checked against the model's classes, and mixup /
cutmix's soft targets."""

import pytest
import torch

from supmae.data.collators import ImageCollator, MixupCollator


def test_collator_stacks_and_checks_labels():
    items = [{"pixel_values": torch.zeros(3, 4, 4), "labels": label} for label in (0, 4, -100)]
    batch = ImageCollator(num_labels=5)(items)
    assert batch["pixel_values"].shape == (3, 3, 4, 4) and batch["labels"].tolist() == [0, 4, -100]
    with pytest.raises(ValueError, match=r"Label 5 is outside the model's 5 classes \(0..4\)"):
        ImageCollator(num_labels=5)(items + [{"pixel_values": torch.zeros(3, 4, 4), "labels": 5}])
    assert "labels" not in ImageCollator()([{"pixel_values": torch.zeros(3, 4, 4)}])


def test_mixup_collator_gives_soft_targets():
    items = [{"pixel_values": torch.randn(3, 8, 8), "labels": i % 5} for i in range(4)]
    batch = MixupCollator(5, mixup=0.8, cutmix=1.0, label_smoothing=0.1)(items)
    assert batch["labels"].shape == (4, 5)
    torch.testing.assert_close(batch["labels"].sum(-1), torch.ones(4))
    assert batch["labels"].min() >= 0.1 / 5 - 1e-6  # smoothing keeps every class above epsilon / classes


def test_collator_rejects_labels_outside_the_model(tmp_path):
    with pytest.raises(ValueError, match="outside the model's 2 classes"):
        ImageCollator(2)([{"pixel_values": torch.zeros(3, 4, 4), "labels": 2}])
