"""The segmentation trainer (supmae.training.segmentation): mmsegmentation's sliding-window inference, its loss
normalization, gradient accumulation, and evaluation over the whole set."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_upernet, write_ade20k_folder
from transformers import TrainingArguments

from supmae.data.segmentation import (
    UNLABELED_PIXEL,
    SegmentationDataset,
    SegmentationEvalTransform,
    ade20k_folder_datasets,
)
from supmae.metrics import segmentation_metrics
from supmae.training.segmentation import (
    SupMAESegmentationTrainer,
    pixel_cross_entropy,
    predict_segmentation,
    sliding_window_logits,
    window_boxes,
)


class PositionalToyModel(torch.nn.Module):
    """Logits that depend on the window's content AND on the position inside it, so that averaging the wrong windows,
    or misplacing one, changes the result."""

    def forward(self, pixel_values):
        ramp = torch.arange(pixel_values.shape[-1], dtype=torch.float32) / 7
        logits = torch.stack([pixel_values[:, 0] + ramp, pixel_values[:, 1] * 2 - ramp, pixel_values.mean(1) ** 2], 1)
        return SimpleNamespace(logits=logits + pixel_values.mean(dim=(1, 2, 3))[:, None, None, None])


@pytest.mark.parametrize("size", [(50, 70), (41, 32), (32, 97)])
def test_sliding_windows_average_every_window_that_covers_a_pixel(size):
    """Sizes that are not multiples of the stride, against windows enumerated independently: tops 0, s, 2s, ... below
    H - crop, then H - crop."""
    crop, stride = 32, 21
    pixel_values = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    model = PositionalToyModel()
    logits = sliding_window_logits(model, pixel_values, crop, stride, num_labels=3, windows_per_batch=3)
    tops = sorted(set(range(0, size[0] - crop, stride)) | {size[0] - crop})
    lefts = sorted(set(range(0, size[1] - crop, stride)) | {size[1] - crop})
    total, count = torch.zeros(2, 3, *size), torch.zeros(size)
    for top in tops:
        for left in lefts:
            total[:, :, top : top + crop, left : left + crop] += model(
                pixel_values[:, :, top : top + crop, left : left + crop]
            ).logits
            count[top : top + crop, left : left + crop] += 1
    assert count.min() >= 1
    torch.testing.assert_close(logits, total / count, rtol=0, atol=1e-6)
    assert len(window_boxes(*size, (crop, crop), (stride, stride))) == len(tops) * len(lefts)


def test_one_window_is_whole_image_inference_and_small_images_are_padded():
    torch.manual_seed(0)
    model = tiny_upernet().eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        whole = model(pixel_values).logits
    torch.testing.assert_close(sliding_window_logits(model, pixel_values, 32, 21, 3), whole, rtol=0, atol=0)
    small = torch.randn(1, 3, 24, 16)
    with torch.no_grad():
        padded = model(F.pad(small, (0, 16, 0, 8))).logits[:, :, :24, :16]
    torch.testing.assert_close(sliding_window_logits(model, small, 32, 21, 3), padded, rtol=0, atol=0)


def test_sliding_windows_of_a_real_model_match_one_window_at_a_time():
    """Batching the windows of two images (window-major) must not mix images or windows up."""
    torch.manual_seed(0)
    model = tiny_upernet().eval()
    pixel_values = torch.randn(2, 3, 40, 56)
    logits = sliding_window_logits(model, pixel_values, 32, 24, 3, windows_per_batch=4)
    expected = torch.zeros_like(logits)
    count = torch.zeros(40, 56)
    with torch.no_grad():
        for top, left, bottom, right in window_boxes(40, 56, (32, 32), (24, 24)):
            for b in range(2):
                expected[b, :, top:bottom, left:right] += model(
                    pixel_values[b : b + 1, :, top:bottom, left:right]
                ).logits[0]
            count[top:bottom, left:right] += 1
    torch.testing.assert_close(logits, expected / count, rtol=0, atol=1e-5)


def test_the_trainer_loss_is_upernets_with_mmsegs_normalization(tmp_path):
    """Decode + 0.4 x auxiliary cross-entropy: with no ignored pixel it equals UperNet's own loss; with ignored pixels
    it is divided by all pixels (mmsegmentation), not by the labelled ones (UperNet)."""
    torch.manual_seed(0)
    model = tiny_upernet().eval()
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = SupMAESegmentationTrainer(model=model, args=args, crop_size=32, stride=16)
    pixel_values, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    with torch.no_grad():
        ours = trainer.compute_loss(model, {"pixel_values": pixel_values, "labels": labels})
        theirs = model(pixel_values, labels=labels).loss
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
        labels[:, :16] = UNLABELED_PIXEL
        ours = trainer.compute_loss(model, {"pixel_values": pixel_values, "labels": labels})
        theirs = model(pixel_values, labels=labels).loss
    torch.testing.assert_close(ours, theirs / 2, rtol=1e-6, atol=0)
    assert pixel_cross_entropy(torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), UNLABELED_PIXEL)) == 0
    optimizer = trainer.create_optimizer()
    assert optimizer.param_groups[0]["lr"] == args.learning_rate  # the heads' group: what the logs show


def test_gradient_accumulation_trains_and_logs_as_one_batch(tmp_path):
    """4 crops in one step, or 2 x 2 with gradient accumulation: the same logged loss and gradient norm, and the same
    weights after the step (AdamW's eps 1 makes its first step about -lr x gradient, so the weights show the gradients
    too). BatchNorm couples the crops of a batch (batches of 2 and of 4 crops give different gradients), so the
    model's BatchNorms are taken out: what is tested is how the Trainer scales the loss. UperNet's forward takes
    **kwargs, from which Trainer would infer that the loss is already divided by the accumulation steps: the loss and
    gradients were then twice as large."""
    torch.manual_seed(0)
    data = [{"pixel_values": torch.randn(3, 32, 32), "labels": torch.randint(0, 3, (32, 32))} for _ in range(4)]
    initial = without_batch_norm(tiny_upernet()).state_dict()
    runs = {}
    for batch, accumulation in ((4, 1), (2, 2)):
        model = without_batch_norm(tiny_upernet())
        model.load_state_dict(initial)
        args = TrainingArguments(
            output_dir=str(tmp_path / str(batch)),
            report_to="none",
            use_cpu=True,
            max_steps=1,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            logging_steps=1,
            save_strategy="no",
            max_grad_norm=0,
            learning_rate=1.0,
            adam_epsilon=1.0,
        )
        trainer = SupMAESegmentationTrainer(model=model, args=args, train_dataset=data, crop_size=32, stride=16)
        trainer.train()
        runs[batch] = (trainer.state.log_history[0], model.state_dict())
    (log_4, weights_4), (log_2, weights_2) = runs[4], runs[2]
    for key in ("loss", "grad_norm", "decode_loss", "auxiliary_loss"):
        assert log_2[key] == pytest.approx(log_4[key], rel=1e-4), key
    moved = [k for k, v in initial.items() if v.is_floating_point() and not torch.equal(v, weights_4[k])]
    assert len(moved) > 40
    for key in moved:
        torch.testing.assert_close(
            weights_2[key] - initial[key], weights_4[key] - initial[key], rtol=1e-4, atol=1e-6, msg=key
        )


def without_batch_norm(module: torch.nn.Module) -> torch.nn.Module:
    """`module` with each BatchNorm replaced by the identity (in place)."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            setattr(module, name, torch.nn.Identity())
        else:
            without_batch_norm(child)
    return module


def test_the_trainer_evaluates_by_sliding_windows_over_the_whole_set(tmp_path):
    torch.manual_seed(0)
    model = tiny_upernet(num_labels=4).eval()
    write_ade20k_folder(tmp_path / "ade", counts={"training": 1, "validation": 3}, size=(40, 56))
    validation = ade20k_folder_datasets(str(tmp_path / "ade"))["validation"]
    dataset = SegmentationDataset(validation, "image", "annotation", SegmentationEvalTransform((64, 32)), False)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    trainer = SupMAESegmentationTrainer(model=model, args=args, eval_dataset=dataset, crop_size=32, stride=24)
    metrics = trainer.evaluate()
    predictions, references = [], []
    for item in dataset:
        predictions.append(predict_segmentation(model, item["pixel_values"][None], item["labels"].shape, 32, 24))
        references.append(item["labels"].numpy())
    expected = segmentation_metrics(predictions, references, num_labels=4)
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy", "per_category_iou"):
        np.testing.assert_allclose(metrics[f"eval_{key}"], expected[key], rtol=1e-12)
    assert dataset[0]["pixel_values"].shape == (3, 32, 45)  # rescaled to fit (64, 32); annotations kept at 40x56
