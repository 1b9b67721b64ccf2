# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""The pretraining trainers: SupMAE's two losses and the supervised branch's accuracy logged, fixed evaluation masks;
and the variant that decodes each batch on the GPU."""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..data.collators import ImageCollator
from ..data.gpu_decode import BatchDecoder, DecodeAhead
from ..metrics import pretraining_metrics
from .optim import decay_parameter_names
from .trainer import SupMAEBaseTrainer


class SupMAETrainer(SupMAEBaseTrainer):
    """
    `Trainer` for `SupMAEForPreTraining`:
    - logs `reconstruction_loss`, `classification_loss` and `classification_accuracy` (the supervised branch's top-1
      on the visible patches, labeled images only) next to the total `loss`, in training and in evaluation;
    - evaluates with masking noise from a generator seeded with `eval_seed`, so every evaluation sees the same masks
      and evaluation never moves the training RNG; its metrics (losses, accuracy, `num_samples`) count the scored
      images only, per image (an unreadable image's row, `scored` False, is left out);
    - applies MAE's weight-decay rule.
    """

    def __init__(self, *args, eval_seed: int = 0, **kwargs):
        default_metrics = "compute_metrics" not in kwargs
        super().__init__(*args, **kwargs)
        if default_metrics:  # the evaluation loss too, as the objective over the scored images
            weight = self.accelerator.unwrap_model(self.model).config.supervised_loss_weight
            self.compute_metrics = functools.partial(pretraining_metrics, supervised_loss_weight=weight)
        self.eval_seed = eval_seed
        self._eval_generator = None
        self._train_sums = None  # [reconstruction, batches, classification * labeled, correct, labeled]

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        return decay_parameter_names(model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if model.training:
            self._record_training_batch(outputs, inputs.get("labels"))
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def _record_training_batch(self, outputs, labels):
        sums = torch.zeros(5, dtype=torch.float64, device=outputs.loss.device)
        sums[0], sums[1] = outputs.reconstruction_loss.detach(), 1
        if labels is not None:
            labeled = labels != -100
            sums[2] = outputs.classification_loss.detach() * labeled.sum()
            sums[3] = (outputs.classification_logits.detach().argmax(-1) == labels)[labeled].sum()
            sums[4] = labeled.sum()
        self._train_sums = sums if self._train_sums is None else self._train_sums + sums

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._train_sums is not None:  # a training log: add what was seen since the last one
            sums = self.accelerator.reduce(self._train_sums, reduction="sum").tolist()
            self._train_sums = None
            logs["reconstruction_loss"] = round(sums[0] / sums[1], 4)
            if sums[4] > 0:
                logs["classification_loss"] = round(sums[2] / sums[4], 4)
                logs["classification_accuracy"] = round(sums[3] / sums[4], 4)
        super().log(logs, *args, **kwargs)

    def evaluate(self, *args, **kwargs):
        # One generator per process, re-seeded for every evaluation: the same masks each time.
        self._eval_generator = torch.Generator().manual_seed(self.eval_seed + self.args.process_index)
        return super().evaluate(*args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Returns the batch's loss, per-image statistics `(B, 4)` [reconstruction loss, cross-entropy, correct,
        scored] and the labels (-100 where there are none) for `pretraining_metrics`."""
        inputs = self._prepare_inputs(inputs)
        pixel_values, labels = inputs["pixel_values"], inputs.get("labels")
        scored = inputs.get("scored")  # False on the rows of unreadable images
        unwrapped = self.accelerator.unwrap_model(model)
        config = unwrapped.config
        num_patches = (pixel_values.shape[-2] // config.patch_size) * (pixel_values.shape[-1] // config.patch_size)
        if self._eval_generator is None:  # prediction_step called outside `evaluate`
            self._eval_generator = torch.Generator().manual_seed(self.eval_seed + self.args.process_index)
        generator = self._eval_generator
        noise = torch.rand(pixel_values.shape[0], num_patches, generator=generator).to(pixel_values.device)
        with torch.no_grad():
            outputs = model(pixel_values, labels=labels, noise=noise)
        if labels is None:
            labels = torch.full((pixel_values.shape[0],), -100, device=pixel_values.device)
        logits = outputs.classification_logits.float()
        cross_entropy = nn.functional.cross_entropy(
            logits / config.supervised_temperature, labels.clamp(min=0), reduction="none"
        )
        # Each image's own reconstruction loss (the batch's is their mean: every image has as many removed patches).
        reconstruction = torch.stack(
            [
                unwrapped.reconstruction_loss(
                    pixel_values[i : i + 1], outputs.logits[i : i + 1], outputs.mask[i : i + 1]
                )
                for i in range(len(pixel_values))
            ]
        )
        stats = torch.stack(
            [
                reconstruction.float(),
                cross_entropy * (labels != -100),
                (logits.argmax(-1) == labels).float(),
                torch.ones_like(cross_entropy) if scored is None else scored.float(),
            ],
            dim=1,
        )
        return outputs.loss.detach(), stats, labels


class DeviceDecodingTrainer(SupMAETrainer):
    """`SupMAETrainer` for training batches that arrive encoded (`EncodedImageCollator`): `batch_decoder` decodes them
    in the training process, `lookahead` batches ahead of the step. Evaluation batches are decoded by the workers as
    usual (`eval_data_collator`, an `ImageCollator` unless given)."""

    def __init__(self, *args, batch_decoder: BatchDecoder, lookahead: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_decoder, self.lookahead = batch_decoder, lookahead
        if self.eval_data_collator is None:
            self.eval_data_collator = ImageCollator(getattr(self.data_collator, "num_labels", None))
        self._ahead: DecodeAhead | None = None

    def get_batch_samples(self, epoch_iterator, num_batches: int, device):
        if self._ahead is None or self._ahead.iterator is not epoch_iterator:
            self._close_ahead()
            decoder = self.batch_decoder
            self._ahead = DecodeAhead(epoch_iterator, decoder.decode_batch, decoder.device, self.lookahead)
        batches = []
        for _ in range(num_batches):
            batch = self._ahead.next()
            if batch is None:
                break
            batches.append(batch)
        return batches, self._get_num_items_in_batch(batches, device)

    def _close_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            self._close_ahead()
