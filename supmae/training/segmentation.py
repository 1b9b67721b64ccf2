# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""The segmentation trainer and mmsegmentation's sliding-window inference.

Shapes: B images, K classes, H x W pixels."""

import time

import numpy as np
import torch
import torch.nn.functional as F

from ..configuration_supmae import size_pair
from ..data.segmentation import UNLABELED_PIXEL, segmentation_collator
from ..metrics import metrics_from_confusion_matrix, segmentation_confusion_matrix
from .distributed import share_main_process_buffers
from .optim import layer_decay_adamw
from .trainer import SupMAEBaseTrainer


def pixel_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = UNLABELED_PIXEL
) -> torch.Tensor:
    """mmsegmentation's decode loss: cross-entropy of `(B, K, h, w)` logits, bilinearly resized to the `(B, H, W)`
    labels, summed over labelled pixels and divided by ALL pixels (an all-ignored crop gives 0, not NaN)."""
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum") / labels.numel()


def window_boxes(height: int, width: int, crop_size: tuple[int, int], stride: tuple[int, int]) -> list[tuple]:
    """mmsegmentation's sliding windows over an image at least `crop_size` large: (top, left, bottom, right) boxes of
    the crop size whose top-left corners step by `stride`, the last row and column moved back to end at the border."""
    (crop_h, crop_w), (stride_h, stride_w) = crop_size, stride
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    columns = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    boxes = []
    for row in range(rows):
        for column in range(columns):
            bottom, right = min(row * stride_h + crop_h, height), min(column * stride_w + crop_w, width)
            boxes.append((max(bottom - crop_h, 0), max(right - crop_w, 0), bottom, right))
    return boxes


@torch.no_grad()
def sliding_window_logits(
    model, pixel_values: torch.Tensor, crop_size, stride, num_labels: int, windows_per_batch: int = 8
) -> torch.Tensor:
    """
    mmsegmentation's slide inference: the model's logits for each `crop_size` window (see `window_boxes`), averaged
    where windows overlap. An image smaller than the crop is padded (bottom, right) with zeros, the normalized mean
    color that training pads with, and the padding is cut off again.

    Args:
        model: returns `.logits` `(n, K, crop_h, crop_w)` for `(n, 3, crop_h, crop_w)` inputs (UperNet does).
        pixel_values: `(B, 3, H, W)` normalized images.
        crop_size, stride: (height, width) pairs (or ints).
        windows_per_batch: windows run through the model at once, per image.

    Returns:
        `(B, K, H, W)` float32 logits.
    """
    crop_size, stride = size_pair(crop_size), size_pair(stride)
    if not all(0 < s <= c for s, c in zip(stride, crop_size, strict=True)) or windows_per_batch < 1:
        raise ValueError(
            f"Sliding windows need 0 < stride <= crop size and windows_per_batch >= 1 (stride {stride}, "
            f"crop size {crop_size}, windows_per_batch {windows_per_batch})."
        )
    batch_size, _, height, width = pixel_values.shape
    pad_h, pad_w = max(crop_size[0] - height, 0), max(crop_size[1] - width, 0)
    padded = F.pad(pixel_values, (0, pad_w, 0, pad_h))
    logits = padded.new_zeros(batch_size, num_labels, *padded.shape[-2:], dtype=torch.float32)
    counts = padded.new_zeros(1, 1, *padded.shape[-2:], dtype=torch.float32)
    boxes = window_boxes(*padded.shape[-2:], crop_size, stride)
    for start in range(0, len(boxes), windows_per_batch):
        chunk = boxes[start : start + windows_per_batch]
        crops = torch.cat([padded[:, :, top:bottom, left:right] for top, left, bottom, right in chunk])
        outputs = model(pixel_values=crops).logits.float().unflatten(0, (len(chunk), batch_size))
        for (top, left, bottom, right), window in zip(chunk, outputs, strict=True):
            logits[:, :, top:bottom, left:right] += window
            counts[:, :, top:bottom, left:right] += 1
    return (logits / counts)[:, :, :height, :width]


# mmsegmentation's multi-scale test: the `img_ratios` of its ADE20K test pipeline (MultiScaleFlipAug, with flip).
TEST_AUGMENTATION_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


@torch.no_grad()
def augmented_probabilities(
    model,
    scaled_pixel_values: list[torch.Tensor],
    output_size,
    crop_size,
    stride,
    num_labels: int,
    flip: bool = False,
    windows_per_batch: int = 8,
) -> torch.Tensor:
    """
    mmsegmentation's `aug_test`: for each rescaled version of the images (and, with `flip`, its mirror image), the
    sliding-window logits (`sliding_window_logits`) resized (bilinear) to `output_size`, turned into probabilities,
    mirrored back; the mean of them all. Their argmax is the prediction.

    Args:
        scaled_pixel_values: `(B, 3, h_r, w_r)` normalized images, one tensor per scale (any sizes).
        output_size: (H, W), the annotations' size.

    Returns:
        `(B, K, H, W)` float32 probabilities.
    """
    total, count = None, 0
    for pixels in scaled_pixel_values:
        for mirrored in (False, True) if flip else (False,):
            logits = sliding_window_logits(
                model, pixels.flip(-1) if mirrored else pixels, crop_size, stride, num_labels, windows_per_batch
            )
            logits = F.interpolate(logits, size=tuple(output_size), mode="bilinear", align_corners=False)
            probabilities = logits.softmax(1)
            probabilities = probabilities.flip(-1) if mirrored else probabilities
            total = probabilities if total is None else total + probabilities
            count += 1
    return total / count


class SupMAESegmentationTrainer(SupMAEBaseTrainer):
    """
    `Trainer` for `UperNetForSemanticSegmentation` on a SupMAE backbone, with mmsegmentation's MAE recipe:
    - AdamW with MAE's layer-wise lr decay (embeddings layer 0, block i layer i + 1, neck and heads the top layer);
    - loss = decode cross-entropy + `auxiliary_loss_weight` x auxiliary cross-entropy (`pixel_cross_entropy`), both
      logged (`decode_loss`, `auxiliary_loss`) next to the total `loss` and the learning rate of the heads;
    - evaluation by sliding windows (`crop_size`, `stride`) on the rescaled images, the logits resized back to each
      original annotation, one confusion matrix over the whole set: `eval_mean_iou`, `eval_mean_accuracy`,
      `eval_overall_accuracy` (the returned metrics also hold the per-class lists); with images at several scales
      (`SegmentationEvalTransform.ratios`) and/or `flip`, mmsegmentation's test-time augmentation instead
      (`augmented_probabilities`);
    Evaluation sets are batched one image at a time (`segmentation_collator`), split across processes without
    padding, so every image counts once.
    """

    def __init__(
        self,
        *args,
        layer_decay: float = 0.65,
        crop_size=512,
        stride=341,
        windows_per_batch: int = 8,
        flip: bool = False,
        **kw,
    ):
        kw.setdefault("data_collator", segmentation_collator)
        super().__init__(*args, **kw)
        self.layer_decay, self.crop_size, self.stride = layer_decay, size_pair(crop_size), size_pair(stride)
        self.windows_per_batch, self.flip = windows_per_batch, flip
        self._auxiliary_logits, self._train_sums = None, None
        # UperNet's forward takes **kwargs, from which Trainer would infer that the loss is already divided for
        # gradient accumulation (and multiply it by the number of processes); compute_loss returns a plain mean.
        self.model_accepts_loss_kwargs = False
        if self.model.auxiliary_head is not None:  # UperNet computes these logits but returns only the summed loss
            self.model.auxiliary_head.register_forward_hook(self._keep_auxiliary_logits)

    def _build_accelerator_args(self, **kwargs):
        # DDP's search for unused parameters starts from the forward's outputs, which hold the decode logits only:
        # it would mark the auxiliary head's parameters unused, then meet their gradients (the loss takes the
        # auxiliary logits from the hook) and fail ("Expected to mark a variable ready only once"). Every parameter
        # reaches the loss, so there is nothing to search for. --ddp_find_unused_parameters given stays as given.
        if self.args.ddp_find_unused_parameters is None:
            self.args.ddp_find_unused_parameters = False
        return super()._build_accelerator_args(**kwargs)

    def _keep_auxiliary_logits(self, module, inputs, output):
        self._auxiliary_logits = output

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = layer_decay_adamw(self.model, self.args, self.layer_decay)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        self._auxiliary_logits = None
        outputs = model(pixel_values=inputs["pixel_values"])
        decode_loss = pixel_cross_entropy(outputs.logits, labels)
        loss, sums = decode_loss, [decode_loss.detach(), torch.zeros_like(decode_loss), 1]
        if self._auxiliary_logits is not None:
            auxiliary_loss = pixel_cross_entropy(self._auxiliary_logits, labels)
            loss = loss + self.model.config.auxiliary_loss_weight * auxiliary_loss
            sums[1] = auxiliary_loss.detach()
        self._auxiliary_logits = None
        if model.training:
            sums = torch.stack([torch.as_tensor(s, dtype=torch.float64, device=loss.device) for s in sums])
            self._train_sums = sums if self._train_sums is None else self._train_sums + sums
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._train_sums is not None:  # a training log: the losses since the last one
            decode, auxiliary, count = self.accelerator.reduce(self._train_sums, reduction="sum").tolist()
            self._train_sums = None
            logs["decode_loss"], logs["auxiliary_loss"] = round(decode / count, 4), round(auxiliary / count, 4)
        super().log(logs, *args, **kwargs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        self._memory_tracker.start()
        start = time.time()
        confusion = self.confusion_matrix(dataset)
        metrics = metrics_from_confusion_matrix(confusion)
        scalars = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items() if not isinstance(v, list)}
        scalars[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 4)
        scalars[f"{metric_key_prefix}_samples_per_second"] = round(len(dataset) / (time.time() - start), 3)
        self.log(scalars)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, scalars)
        self._memory_tracker.stop_and_update_metrics(scalars)
        lists = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items() if isinstance(v, list)}
        return {**scalars, **lists}

    def confusion_matrix(self, dataset) -> torch.Tensor:
        """(K, K) pixel counts over the whole `dataset`, summed over processes (rows = reference class)."""
        model, args = self.model, self.args
        num_labels = model.config.num_labels
        shard = torch.utils.data.Subset(dataset, range(args.process_index, len(dataset), args.world_size))
        loader = torch.utils.data.DataLoader(
            shard, batch_size=1, collate_fn=segmentation_collator, num_workers=args.dataloader_num_workers
        )
        confusion = torch.zeros(num_labels, num_labels, dtype=torch.int64, device=args.device)
        share_main_process_buffers(model, args)  # the BatchNorm statistics of the model the main process saves
        was_training = model.training
        model.eval()
        try:
            for batch in loader:
                if batch is None:  # an unreadable image or annotation (skipped, listed in skipped_images.tsv)
                    continue
                labels = batch["labels"].to(args.device)
                with self.accelerator.autocast():
                    scores = self.segmentation_scores(batch["pixel_values"], labels.shape[-2:])
                confusion += segmentation_confusion_matrix(scores.argmax(1), labels, num_labels, UNLABELED_PIXEL)
        finally:
            model.train(was_training)
        return self.accelerator.reduce(confusion, reduction="sum")

    def segmentation_scores(self, pixel_values, output_size) -> torch.Tensor:
        """`(B, K, H, W)` scores at the annotations' `output_size`, whose argmax is the prediction: the sliding-window
        logits of `(B, 3, h, w)` pixel_values, or, for a list of scales or with `flip`, `augmented_probabilities`."""
        device, num_labels = self.args.device, self.model.config.num_labels
        if isinstance(pixel_values, list | tuple) or self.flip:
            scales = pixel_values if isinstance(pixel_values, list | tuple) else [pixel_values]
            scaled = [pixels.to(device) for pixels in scales]
            return augmented_probabilities(
                self.model,
                scaled,
                output_size,
                self.crop_size,
                self.stride,
                num_labels,
                self.flip,
                self.windows_per_batch,
            )
        logits = sliding_window_logits(
            self.model, pixel_values.to(device), self.crop_size, self.stride, num_labels, self.windows_per_batch
        )
        return F.interpolate(logits, size=tuple(output_size), mode="bilinear", align_corners=False)


def predict_segmentation(model, pixel_values: torch.Tensor, output_size, crop_size, stride) -> np.ndarray:
    """The `(H, W)` class map of one image `(1, 3, h, w)`: sliding windows, logits resized to `output_size`."""
    logits = sliding_window_logits(model, pixel_values, crop_size, stride, model.config.num_labels)
    logits = F.interpolate(logits, size=tuple(output_size), mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].cpu().numpy()
