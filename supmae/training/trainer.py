# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""`SupMAEBaseTrainer`: what every SupMAE trainer adds to Transformers' Trainer (crash-safe checkpoints, checked
resumes, non-finite losses, skipped-image counts)."""

import logging
import math
import os
import shutil

import torch
from torch import nn
from transformers import Trainer
from transformers.integrations.integration_utils import TensorBoardCallback, default_logdir
from transformers.trainer_utils import rotate_checkpoints

from ..cli import TrainingStopped
from ..data.images import SKIPPED_IMAGES, count_skipped_images
from .checkpoints import last_complete_checkpoint, mark_checkpoint_complete, verify_loaded_checkpoint


logger = logging.getLogger(__name__)


class NonFiniteLossError(TrainingStopped):
    """The training loss became NaN or infinite (with `--on_nonfinite_loss stop`)."""


class SupMAEBaseTrainer(Trainer):
    """What both SupMAE trainers add to `Trainer`:
    - evaluation and prediction see every image even when training drops its last incomplete batch (MAE does), and
      batch with `eval_data_collator` when one is set (training's may mix images); the rows of unreadable images
      (`scored` False, label -100) are left to the metrics to skip;
    - after loading a checkpoint to resume, a check that every tensor of the model was in it and was loaded
      (Trainer loads with `strict=False`, which would drop renamed weights without a word);
    - a non-finite loss stops the run before its update, naming the step (or, `on_nonfinite_loss="skip"`, its
      gradients are dropped and counted);
    - checkpoints are marked complete only once all their files are on disk, and older ones are rotated away only
      after that; a save that fails is removed and reported, and the previous checkpoint stays;
    - the logs count the unreadable images skipped so far (`skipped_images`);
    - the training set sees each epoch's number (`set_epoch`) in multi-process runs too;
    - the model card the scripts write is kept (`push_to_hub` would replace it with Trainer's generic one);
    - under FSDP with sharded checkpoints, the saved model is still one `model.safetensors` (Trainer writes none).
    """

    eval_data_collator = None
    nonfinite_steps_skipped = 0
    _skipping_update = False  # a non-finite loss was met in the current optimizer step's micro-batches

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # TensorBoard's callback picks its folder (OUTPUT_DIR/runs/...) when training begins; a Trainer that only
        # evaluates would log to ./runs/ in the working directory instead.
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
                callback.logging_dir = os.path.join(self.args.output_dir, default_logdir())

    def _get_dataloader(self, dataset, description, *args, is_training=False, **kwargs):
        # Evaluation and prediction see every image (no drop_last) and batch with `eval_data_collator` when one is set.
        drop_last, collator = self.args.dataloader_drop_last, self.data_collator
        self.args.dataloader_drop_last = drop_last and is_training
        if not is_training and self.eval_data_collator is not None:
            self.data_collator = self.eval_data_collator
        try:
            return super()._get_dataloader(dataset, description, *args, is_training=is_training, **kwargs)
        finally:
            self.args.dataloader_drop_last, self.data_collator = drop_last, collator

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # The evaluation sets' `scored` mask stays out of the model's inputs: the rows of unreadable images already
        # carry label -100, which the losses and metrics skip.
        inputs = {key: value for key, value in inputs.items() if key != "scored"}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def get_train_dataloader(self):
        """Trainer's training loader; for a stream, one that drops the last incomplete batch too (Trainer gives only
        map-style data `drop_last`, and a last batch of one image would break the supervised head's BatchNorm)."""
        dataset = self.train_dataset
        if not (self.args.dataloader_drop_last and isinstance(dataset, torch.utils.data.IterableDataset)):
            return super().get_train_dataloader()
        args = self.args
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=self._train_batch_size,
            collate_fn=self.data_collator,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            prefetch_factor=args.dataloader_prefetch_factor,
            drop_last=True,
        )
        return self.accelerator.prepare(loader)  # accelerate carries drop_last into the loader it makes of this one

    def create_model_card(self, *args, **kwargs):
        """Keep the card the scripts write (supmae.model_card) instead of Trainer's generic one."""
        if not os.path.isfile(os.path.join(self.args.output_dir, "README.md")):
            super().create_model_card(*args, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Trainer's save; under FSDP with `state_dict_type` SHARDED_STATE_DICT (examples/fsdp_config.json, so that
        checkpoints are written in shards) Trainer's `save_model` writes no weights at all, so the model is gathered
        whole (a collective: every process calls this) and saved by the main process. Checkpoints (`_internal_call`)
        stay sharded."""
        super().save_model(output_dir, _internal_call)
        plugin = getattr(self.accelerator.state, "fsdp_plugin", None)
        if self.is_fsdp_enabled and not _internal_call and "FULL_STATE_DICT" not in str(plugin.state_dict_type):
            self._save(output_dir or self.args.output_dir, state_dict=self.accelerator.get_state_dict(self.model))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        weights = os.path.join(resume_from_checkpoint, "model.safetensors")
        if os.path.isfile(weights):
            verify_loaded_checkpoint(self.model if model is None else model, weights)

    def _load_optimizer_and_scheduler(self, checkpoint):
        try:
            super()._load_optimizer_and_scheduler(checkpoint)
        except Exception as error:  # torch.load's unpickling errors, truncated zip archives, OSError
            if checkpoint is None:
                raise
            # Not torch's own text: for an unpickling error it suggests weights_only=False, i.e. running the file.
            raise OSError(
                f"Cannot resume from {checkpoint}: its optimizer or scheduler state cannot be read "
                f"({type(error).__name__}; the file is damaged). Resume from an earlier checkpoint with "
                "--resume_from_checkpoint, or move this one aside."
            ) from error

    def _run_epoch(self, *args, **kwargs):
        # Resumed from a checkpoint of the last step, Trainer would still take one more step before it checks.
        if self.state.global_step >= self.state.max_steps > 0:
            self.control.should_training_stop = True
            return
        # The training set's per-epoch augmentation (TransformedImageDataset.set_epoch). accelerate forwards
        # set_epoch to the dataset only when its sampler has none, i.e. not under DistributedSampler: every epoch
        # of a multi-process run would repeat the first one's crops.
        if hasattr(self.train_dataset, "set_epoch") and "epoch" in kwargs:
            self.train_dataset.set_epoch(kwargs["epoch"])
        return super()._run_epoch(*args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        skip = getattr(self.args, "on_nonfinite_loss", "stop") == "skip"
        # A non-finite forward also poisons BatchNorm's running statistics: keep them to restore if the step is skipped.
        statistics = [(b, b.clone()) for b in batch_norm_buffers(model)] if skip else []
        loss = super().training_step(model, inputs, num_items_in_batch)
        # One flag for all processes, so that all take the same turn. (Trainer's logging_nan_inf_filter already
        # reads the loss every micro-batch; with several processes this adds a one-number all-reduce.)
        if not self._all_processes_agree(bool(torch.isfinite(loss))):
            step, value = self.state.global_step + 1, loss.item() * self.current_gradient_accumulation_steps
            value = value if not math.isfinite(value) else "non-finite in another process"
            if not skip:
                last = last_complete_checkpoint(self.args.output_dir)
                when = (
                    "after DeepSpeed applied that step's update"
                    if self.is_deepspeed_enabled
                    else ("before that step's update")
                )
                raise NonFiniteLossError(
                    f"The training loss is {value} at step {step} (epoch {self.state.epoch or 0:.2f}); the run "
                    f"stopped {when}. "
                    + (
                        f"The last checkpoint, {last}, is intact: resume from it"
                        if last
                        else "No checkpoint was saved"
                    )
                    + " (a lower learning rate, gradient clipping with --max_grad_norm, or bf16 instead of fp16 may "
                    "help), or pass --on_nonfinite_loss skip to skip such steps."
                )
            for buffer, saved in statistics:
                buffer.copy_(saved)
            if not self._skipping_update:
                self.nonfinite_steps_skipped += 1
                logger.warning(
                    f"Loss {value} at training step {step}: the step's update is skipped "
                    f"({self.nonfinite_steps_skipped} so far)."
                )
            self._skipping_update = True
        if self._skipping_update:
            drop_gradients(model, keep_for_scaler=self.accelerator.scaler is not None)
            if self.accelerator.sync_gradients:  # the window's last micro-batch: the next step starts afresh
                self._skipping_update = False
        return loss

    def _all_processes_agree(self, ok: bool) -> bool:
        """True when `ok` holds in every process (a collective: every process must call it)."""
        if self.accelerator.num_processes == 1:
            return ok
        failed = torch.tensor([0.0 if ok else 1.0], device=self.args.device)
        return self.accelerator.reduce(failed, reduction="sum").item() == 0

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:  # a training log
            skipped = count_skipped_images(os.path.join(self.args.output_dir, SKIPPED_IMAGES))
            if skipped:
                logs["skipped_images"] = skipped
            if self.nonfinite_steps_skipped:
                logs["nonfinite_steps_skipped"] = self.nonfinite_steps_skipped
        super().log(logs, *args, **kwargs)

    def _save_checkpoint(self, model, trial):
        """Trainer's checkpoint, made crash-safe: older checkpoints are rotated away only once this one is complete
        (its files synced to disk, then `checkpoint_complete.json` written atomically); a save that fails in any
        process (disk full, say) is removed and reported, in every process, with the checkpoint that is still good."""
        run_dir = self._get_output_dir(trial=trial)
        checkpoint = os.path.join(run_dir, f"checkpoint-{self.state.global_step}")
        limit, failure = self.args.save_total_limit, None
        self.args.save_total_limit = None  # Trainer would rotate before the new checkpoint is marked
        try:
            super()._save_checkpoint(model, trial)
        except Exception as error:  # torch.save raises RuntimeError, safetensors SafetensorError, files OSError
            failure = error
        finally:
            self.args.save_total_limit = limit
        if self._all_processes_agree(failure is None) and self.args.should_save:
            try:
                torch.save(self.args, os.path.join(checkpoint, "training_args.bin"))  # with the real limit
                mark_checkpoint_complete(checkpoint, self.state.global_step)
            except Exception as error:
                failure = error
        if not self._all_processes_agree(failure is None):
            if self.args.should_save:
                shutil.rmtree(checkpoint, ignore_errors=True)
            last = last_complete_checkpoint(run_dir)
            reason = f"{type(failure).__name__}: {failure}" if failure else "it failed in another process"
            number = getattr(failure, "errno", None)
            raise OSError(
                number,
                f"Saving {checkpoint} failed ({' '.join(reason.split())[:300]}); the partial checkpoint was removed. "
                + (f"The last complete checkpoint is {last}." if last else "There is no earlier checkpoint.")
                + " If the disk is full, free some space and resume.",
            ) from failure
        if self.args.should_save:
            rotate_checkpoints(run_dir, limit, self.state.best_model_checkpoint, use_mtime=True)


def drop_gradients(model: nn.Module, keep_for_scaler: bool) -> None:
    """Make the coming optimizer step a no-op: no gradients (AdamW skips parameters without one), or, under fp16's
    GradScaler, which needs gradients to inspect, NaN ones, which make it skip the step and lower its scale."""
    for parameter in model.parameters():
        if not keep_for_scaler:
            parameter.grad = None
        elif parameter.grad is not None:
            parameter.grad.fill_(float("nan"))


def batch_norm_buffers(model: nn.Module) -> list[torch.Tensor]:
    """The running statistics of every BatchNorm layer in `model`."""
    modules = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return [b for m in modules for b in m.buffers(recurse=False)]
