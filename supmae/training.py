# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Training pieces shared by the run_*.py scripts: weight-decay groups, learning-rate scaling, and a Trainer that
logs SupMAE's two losses and the supervised branch's accuracy, evaluates with fixed masks and checks resumes."""

import os

import numpy as np
import safetensors
import torch
from torch import nn
from transformers import Trainer
from transformers.utils import logging


logger = logging.get_logger(__name__)


def decay_parameter_names(model: nn.Module) -> list[str]:
    """Trainable parameters that get weight decay: MAE's (and timm's) rule gives none to biases and other 1-D
    parameters (norms); the cls and mask tokens, being 3-D, do get it. Frozen tables are left out."""
    return [
        name
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and parameter.ndim > 1 and not name.endswith(".bias")
    ]


def scaled_learning_rate(base_learning_rate: float, effective_batch_size: int) -> float:
    """MAE's linear scaling rule: `lr = base_lr * effective_batch_size / 256`."""
    return base_learning_rate * effective_batch_size / 256


def convert_to_sync_batch_norm(model: nn.Module) -> nn.Module:
    """Share the supervised head's BatchNorm statistics across processes (CUDA only: PyTorch's SyncBatchNorm)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def parameters_digest(model: nn.Module) -> torch.Tensor:
    """A float64 fingerprint of all parameters, to compare replicas across processes. (Buffers are left out: the
    head's BatchNorm running statistics are per process under DDP, as in the official code; rank 0's are saved.)"""
    values = [p.detach().double().flatten() for p in model.parameters()]
    flat = torch.cat(values)
    weights = torch.linspace(1.0, 2.0, len(flat), dtype=torch.float64, device=flat.device)
    return torch.stack([flat.sum(), (flat * weights).sum(), (flat * flat).sum()])


class SupMAETrainer(Trainer):
    """
    `Trainer` for `SupMAEForPreTraining`:
    - logs `reconstruction_loss`, `classification_loss` and `classification_accuracy` (the supervised branch's top-1
      on the visible patches, labeled images only) next to the total `loss`, in training and in evaluation;
    - evaluates with masking noise from a generator seeded with `eval_seed`, so every evaluation sees the same masks
      and evaluation never moves the training RNG;
    - applies MAE's weight-decay rule, and evaluates every image even when training drops the last batch;
    - after loading a checkpoint to resume, checks that every tensor of the model was in it and was loaded (Trainer
      loads with `strict=False`, which would drop renamed weights without a word).
    """

    def __init__(self, *args, eval_seed: int = 0, **kwargs):
        kwargs.setdefault("compute_metrics", pretraining_metrics)
        super().__init__(*args, **kwargs)
        self.eval_seed = eval_seed
        self._eval_generator = None
        self._train_sums = None  # [reconstruction, batches, classification * labeled, correct, labeled]

    def get_eval_dataloader(self, eval_dataset=None):
        # `dataloader_drop_last` (MAE drops the last incomplete training batch) must not cost evaluation images.
        drop_last, self.args.dataloader_drop_last = self.args.dataloader_drop_last, False
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.args.dataloader_drop_last = drop_last

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
        """Returns the loss, per-image statistics `(B, 3)` [reconstruction loss of the batch, cross-entropy,
        correct] and the labels (-100 where there are none) for `pretraining_metrics`."""
        inputs = self._prepare_inputs(inputs)
        pixel_values, labels = inputs["pixel_values"], inputs.get("labels")
        config = self.accelerator.unwrap_model(model).config
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
        stats = torch.stack(
            [
                outputs.reconstruction_loss.expand(len(labels)).float(),
                cross_entropy * (labels != -100),
                (logits.argmax(-1) == labels).float(),
            ],
            dim=1,
        )
        return outputs.loss.detach(), stats, labels

    def create_model_card(self, *args, **kwargs):
        """Keep the card the scripts write (supmae.model_card) instead of Trainer's generic one."""
        if not os.path.isfile(os.path.join(self.args.output_dir, "README.md")):
            super().create_model_card(*args, **kwargs)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        weights = os.path.join(resume_from_checkpoint, "model.safetensors")
        if os.path.isfile(weights):
            verify_loaded_checkpoint(self.model if model is None else model, weights)


def verify_loaded_checkpoint(model: nn.Module, weights_file: str) -> None:
    """Raise unless the model holds exactly the tensors of `weights_file` (same names, same values)."""
    with safetensors.safe_open(weights_file, framework="pt") as checkpoint:
        saved = set(checkpoint.keys())
        state = model.state_dict()
        missing, unexpected = sorted(set(state) - saved), sorted(saved - set(state))
        if missing or unexpected:
            raise RuntimeError(
                f"Resuming from {weights_file}: the checkpoint and the model disagree. Not in the checkpoint: "
                f"{missing[:10]}; not in the model: {unexpected[:10]}."
            )
        different = [k for k in saved if not torch.equal(checkpoint.get_tensor(k), state[k].detach().cpu())]
        if different:
            raise RuntimeError(
                f"Resuming from {weights_file}: these tensors were not loaded: {sorted(different)[:10]}."
            )


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The `checkpoint-N` folder with the largest N whose save finished (Trainer writes `trainer_state.json` last);
    folders left half-written by a killed run are skipped with a warning."""
    steps = []
    for name in os.listdir(output_dir) if os.path.isdir(output_dir) else []:
        prefix, _, step = name.partition("-")
        if prefix == "checkpoint" and step.isdigit() and os.path.isdir(os.path.join(output_dir, name)):
            steps.append(int(step))
    for step in sorted(steps, reverse=True):
        checkpoint = os.path.join(output_dir, f"checkpoint-{step}")
        if os.path.isfile(os.path.join(checkpoint, "trainer_state.json")):
            return checkpoint
        logger.warning(f"Skipping {checkpoint}: its save did not finish (no trainer_state.json).")
    return None


def pretraining_metrics(prediction) -> dict[str, float]:
    """`reconstruction_loss`, and over labeled images `classification_loss` and `classification_accuracy`, from the
    per-image statistics of `SupMAETrainer.prediction_step`."""
    stats, labels = np.asarray(prediction.predictions), np.asarray(prediction.label_ids)
    metrics = {"reconstruction_loss": float(stats[:, 0].mean())}
    labeled = labels != -100
    if labeled.any():
        metrics["classification_loss"] = float(stats[labeled, 1].mean())
        metrics["classification_accuracy"] = float(stats[labeled, 2].mean())
    return metrics
