# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""The trainer of the few-shot transfer suite (multi-label targets), and the probe's BatchNorm over every process's
share of a batch."""

import torch
import torch.distributed as dist
from torch import nn

from .classification import SupMAEClassificationTrainer


class TransferTrainer(SupMAEClassificationTrainer):
    """`SupMAEClassificationTrainer` with a multi-label option: binary cross-entropy on multi-hot targets (sigmoid
    scores), as VOC 2007 is trained and scored."""

    def __init__(self, *args, multi_label: bool = False, **kwargs):
        kwargs.setdefault("compute_metrics", None)
        kwargs.setdefault("preprocess_logits_for_metrics", None)  # predictions are the logits, for any metric
        super().__init__(*args, **kwargs)
        self.multi_label = multi_label

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.multi_label:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = nn.functional.binary_cross_entropy_with_logits(outputs.logits.float(), labels.float())
        return (loss, outputs) if return_outputs else loss


class GlobalBatchNorm(nn.Module):
    """A `BatchNorm1d` (`batch_norm`, whose buffers it updates) that in training normalizes with the statistics of
    the whole batch, every process's share of it together (all-reduced sums, in float64), as one process given the
    whole batch would; in evaluation, or in one process, it is `batch_norm` itself. PyTorch's SyncBatchNorm does
    the same on GPUs only; this runs on any back end (gloo on CPUs). It is the linear probe's, on fixed features:
    no gradient flows into its inputs, so the statistics are all-reduced as numbers (inputs that require gradients
    are refused: their gradients through the statistics would stay in each process)."""

    def __init__(self, batch_norm: nn.BatchNorm1d):
        super().__init__()
        self.batch_norm = batch_norm

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        norm = self.batch_norm
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return norm(features)
        if features.requires_grad:
            raise ValueError("GlobalBatchNorm normalizes fixed features (a linear probe's): these require gradients.")
        values = features.double()
        sums = torch.cat([values.new_full((1,), values.shape[0]), values.sum(0)])
        dist.all_reduce(sums)
        count, mean = sums[0], sums[1:] / sums[0]
        variance = ((values - mean) ** 2).sum(0)
        dist.all_reduce(variance)
        variance /= count  # biased, as BatchNorm normalizes
        if norm.track_running_stats:
            with torch.no_grad():
                norm.num_batches_tracked.add_(1)
                momentum = 1 / norm.num_batches_tracked.item() if norm.momentum is None else norm.momentum
                norm.running_mean.mul_(1 - momentum).add_(momentum * mean.to(norm.running_mean.dtype))
                unbiased = variance * count / (count - 1)  # the running variance is unbiased, as BatchNorm keeps it
                norm.running_var.mul_(1 - momentum).add_(momentum * unbiased.to(norm.running_var.dtype))
        normalized = ((values - mean) / torch.sqrt(variance + norm.eps)).to(features.dtype)
        return normalized * norm.weight + norm.bias if norm.affine else normalized
