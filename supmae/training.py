# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Training pieces shared by the run_*.py scripts: weight-decay groups, learning-rate scaling, and a Trainer that
logs SupMAE's two losses and the supervised branch's accuracy, evaluates with fixed masks and checks resumes."""

import errno
import functools
import json
import math
import os
import shutil

import numpy as np
import safetensors
import torch
import transformers.trainer as trainer_module
from torch import nn
from transformers import Trainer
from transformers.integrations.integration_utils import TensorBoardCallback, default_logdir
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.trainer_utils import rotate_checkpoints
from transformers.utils import logging

from .data import SKIPPED_IMAGES, count_skipped_images
from .evaluation import topk_accuracy, topk_logits_preprocessor


logger = logging.get_logger(__name__)


# BEiT's (and timm's) exception for its relative position bias tables, which are 2-D: no weight decay.
NO_DECAY_TABLES = (".relative_position_bias_table",)


def decay_parameter_names(model: nn.Module) -> list[str]:
    """Trainable parameters that get weight decay: MAE's (and timm's) rule gives none to biases and other 1-D
    parameters (norms, layer scales) nor to relative position bias tables; the cls and mask tokens, being 3-D, do get
    it. Frozen tables are left out."""
    return [
        name
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and parameter.ndim > 1 and not name.endswith((".bias", *NO_DECAY_TABLES))
    ]


def scaled_learning_rate(base_learning_rate: float, effective_batch_size: int) -> float:
    """MAE's linear scaling rule: `lr = base_lr * effective_batch_size / 256`."""
    return base_learning_rate * effective_batch_size / 256


def peak_learning_rate(learning_rate: float | None, base_learning_rate: float, effective_batch_size: int):
    """The peak learning rate and a log line saying where it comes from: `learning_rate` when one was given (it wins
    over the rule), else MAE's `base_lr * effective_batch_size / 256`."""
    scaled = scaled_learning_rate(base_learning_rate, effective_batch_size)
    rule = f"{base_learning_rate:g} x {effective_batch_size} / 256 = {scaled:g}"
    if learning_rate is not None:
        return learning_rate, f"lr {learning_rate:g} from --learning_rate (it overrides the base-lr rule, {rule})"
    return scaled, f"effective batch {effective_batch_size}: lr = {rule}"


# LARS (You et al., 2017) is a large-batch optimizer: MAE probes with it at an effective batch of 16384. Its step is
# lr x trust_coefficient (0.001) x |w| / |g|, and with lr = 0.1 x batch / 256 a small batch leaves the head where it
# was initialized. Below this batch the probe uses momentum SGD (the same lr rule, no trust ratio).
LARS_MIN_EFFECTIVE_BATCH = 4096


def linear_probe_optimizer(choice: str, effective_batch_size: int) -> tuple[str, str]:
    """`"lars"` or `"sgd"` for `--linprobe_optimizer` `choice` (`"auto"` decides by the batch), and a log line."""
    if choice != "auto":
        return choice, f"linear probe optimizer: {choice} (--linprobe_optimizer)"
    if effective_batch_size >= LARS_MIN_EFFECTIVE_BATCH:
        message = f"linear probe optimizer: MAE's LARS (effective batch {effective_batch_size} >= {LARS_MIN_EFFECTIVE_BATCH})"
        return "lars", message
    return "sgd", (
        f"linear probe optimizer: SGD with momentum 0.9, no LARS trust ratio (effective batch {effective_batch_size} "
        f"< {LARS_MIN_EFFECTIVE_BATCH}, where LARS's step, lr x 0.001 x |w|/|g|, barely moves the head; "
        "--linprobe_optimizer lars forces it)"
    )


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


CHECKPOINT_COMPLETE = "checkpoint_complete.json"  # written last, after every file of a checkpoint is on disk


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite (with `--on_nonfinite_loss stop`)."""


class SupMAEBaseTrainer(Trainer):
    """What both SupMAE trainers add to `Trainer`:
    - evaluation and prediction see every image even when training drops its last incomplete batch (MAE does), and
      batch with `eval_data_collator` when one is set (training's may mix images);
    - after loading a checkpoint to resume, a check that every tensor of the model was in it and was loaded
      (Trainer loads with `strict=False`, which would drop renamed weights without a word);
    - a non-finite loss stops the run before its update, naming the step (or, `on_nonfinite_loss="skip"`, its
      gradients are dropped and counted);
    - checkpoints are marked complete only once all their files are on disk, and older ones are rotated away only
      after that; a save that fails is removed and reported, and the previous checkpoint stays;
    - the logs count the unreadable images skipped so far (`skipped_images`);
    - the training set sees each epoch's number (`set_epoch`) in multi-process runs too;
    - the model card the scripts write is kept (`push_to_hub` would replace it with Trainer's generic one).
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
        drop_last, collator = self.args.dataloader_drop_last, self.data_collator
        self.args.dataloader_drop_last = drop_last and is_training
        if not is_training and self.eval_data_collator is not None:
            self.data_collator = self.eval_data_collator
        # Trainer gives only map-style data `drop_last`; a stream's last batch of one would break the supervised head's
        # BatchNorm. (accelerate carries the flag into the loader it makes of this one.)
        streamed = is_training and drop_last and isinstance(dataset, torch.utils.data.IterableDataset)
        if streamed:
            trainer_module.DataLoader = functools.partial(torch.utils.data.DataLoader, drop_last=True)
        try:
            return super()._get_dataloader(dataset, description, *args, is_training=is_training, **kwargs)
        finally:
            self.args.dataloader_drop_last, self.data_collator = drop_last, collator
            trainer_module.DataLoader = torch.utils.data.DataLoader

    def create_model_card(self, *args, **kwargs):
        """Keep the card the scripts write (supmae.model_card) instead of Trainer's generic one."""
        if not os.path.isfile(os.path.join(self.args.output_dir, "README.md")):
            super().create_model_card(*args, **kwargs)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        weights = os.path.join(resume_from_checkpoint, "model.safetensors")
        if os.path.isfile(weights):
            verify_loaded_checkpoint(self.model if model is None else model, weights)

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
                when = "after DeepSpeed applied that step's update" if self.is_deepspeed_enabled else (
                    "before that step's update")  # fmt: skip
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
                logger.warning(f"Loss {value} at training step {step}: the step's update is skipped "
                               f"({self.nonfinite_steps_skipped} so far).")  # fmt: skip
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


def mark_checkpoint_complete(checkpoint: str, step: int) -> None:
    """Sync every file of `checkpoint` to disk, then write `checkpoint_complete.json` (their sizes) atomically."""
    sizes = {}
    for root, _, names in os.walk(checkpoint):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                _fsync(file.fileno())
            sizes[os.path.relpath(path, checkpoint)] = os.path.getsize(path)
    partial = os.path.join(checkpoint, CHECKPOINT_COMPLETE + ".partial")
    with open(partial, "w") as file:
        json.dump({"step": step, "files": sizes}, file, indent=1)
        file.flush()
        _fsync(file.fileno())
    os.replace(partial, os.path.join(checkpoint, CHECKPOINT_COMPLETE))
    directory = os.open(checkpoint, os.O_RDONLY)
    try:
        _fsync(directory)
    finally:
        os.close(directory)


def _fsync(descriptor: int) -> None:
    """`os.fsync`, except on file systems that cannot (some network and FUSE mounts refuse it for directories or
    read-only descriptors): there the data is as durable as that file system makes it."""
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EROFS):
            raise


def checkpoint_problem(checkpoint: str, require_mark: bool = False) -> str | None:
    """Why `checkpoint` cannot be resumed from (None when it can): a missing or unreadable trainer_state.json, a
    missing (with `require_mark`) or unreadable `checkpoint_complete.json`, or files whose sizes differ from those it
    recorded. A checkpoint written by plain Trainer has no such record and is judged by its trainer_state.json, which
    Trainer writes last."""
    try:
        with open(os.path.join(checkpoint, "trainer_state.json")) as file:
            json.load(file)
    except FileNotFoundError:
        return "its save did not finish (no trainer_state.json)"
    except (OSError, ValueError) as error:
        return f"its trainer_state.json is unreadable ({error})"
    record = os.path.join(checkpoint, CHECKPOINT_COMPLETE)
    if not os.path.isfile(record):
        return f"it was never marked complete (no {CHECKPOINT_COMPLETE})" if require_mark else None
    try:
        with open(record) as file:
            sizes = dict(json.load(file)["files"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its {CHECKPOINT_COMPLETE} is unreadable ({type(error).__name__}: {error})"
    for name, size in sizes.items():
        path = os.path.join(checkpoint, name)
        actual = os.path.getsize(path) if os.path.isfile(path) else None
        if actual != size:
            return f"{name} has {actual if actual is not None else 'no'} bytes, {size} when it was saved"
    return None


class SupMAETrainer(SupMAEBaseTrainer):
    """
    `Trainer` for `SupMAEForPreTraining`:
    - logs `reconstruction_loss`, `classification_loss` and `classification_accuracy` (the supervised branch's top-1
      on the visible patches, labeled images only) next to the total `loss`, in training and in evaluation;
    - evaluates with masking noise from a generator seeded with `eval_seed`, so every evaluation sees the same masks
      and evaluation never moves the training RNG;
    - applies MAE's weight-decay rule.
    """

    def __init__(self, *args, eval_seed: int = 0, **kwargs):
        kwargs.setdefault("compute_metrics", pretraining_metrics)
        super().__init__(*args, **kwargs)
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


def checkpoint_steps(output_dir: str) -> dict[int, str]:
    """The `checkpoint-N` folders of `output_dir`, by N."""
    found = {}
    for name in os.listdir(output_dir) if os.path.isdir(output_dir) else []:
        prefix, _, step = name.partition("-")
        if prefix == "checkpoint" and step.isdigit() and os.path.isdir(os.path.join(output_dir, name)):
            found[int(step)] = os.path.join(output_dir, name)
    return found


def run_marks_checkpoints(output_dir: str) -> bool:
    """Whether this output directory's checkpoints were written by SupMAE's trainers (one carries the mark): then a
    checkpoint without the mark is one whose save was cut short."""
    return any(
        os.path.isfile(os.path.join(path, CHECKPOINT_COMPLETE)) for path in checkpoint_steps(output_dir).values()
    )


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The `checkpoint-N` folder with the largest N that can be resumed from (`checkpoint_problem`); folders left
    incomplete by a killed run are skipped with a warning that says why."""
    require_mark = run_marks_checkpoints(output_dir)
    for _, checkpoint in sorted(checkpoint_steps(output_dir).items(), reverse=True):
        problem = checkpoint_problem(checkpoint, require_mark)
        if problem is None:
            return checkpoint
        logger.warning(f"Skipping {checkpoint}: {problem}.")
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


def layer_id(name: str, num_layers: int) -> int:
    """MAE's layer-wise lr-decay groups for a classifier's parameter `name` (or, under `backbone.`, UperNet's SupMAE
    backbone's): the embeddings are layer 0, block i is layer i + 1, everything after the blocks (fc_norm and the head;
    the feature pyramid and UperNet's heads) is layer `num_layers + 1`."""
    name = name.removeprefix("backbone.")
    if name.startswith("supmae.embeddings."):
        return 0
    if name.startswith("supmae.layers."):
        return int(name.split(".")[2]) + 1
    return num_layers + 1


def layer_decay_parameter_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW groups of MAE's fine-tuning: lr scale `layer_decay ** (num_layers + 1 - layer_id)` and no weight decay on
    biases, 1-D parameters, the cls token, the position table and relative position bias tables (ViT-B: 13 lr
    scales, 0.65**13 ... 1)."""
    num_layers = (getattr(model.config, "backbone_config", None) or model.config).num_hidden_layers
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        no_decay = parameter.ndim == 1 or name.endswith(
            (".bias", ".cls_token", ".position_embeddings", *NO_DECAY_TABLES)
        )
        layer = layer_id(name, num_layers)
        key = (layer, no_decay)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - layer)
            groups[key] = {"params": [], "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": scale}
        groups[key]["params"].append(parameter)
    return list(groups.values())


def layer_decay_adamw(model: nn.Module, args, layer_decay: float) -> torch.optim.AdamW:
    """AdamW over `layer_decay_parameter_groups` at `args.learning_rate` x each group's lr scale, with the Trainer
    arguments' betas, eps, weight decay and kernel (`--optim adamw_torch_fused`). The top layer's group (the head's
    lr, the peak) comes first, since Trainer logs the first group's learning rate."""
    groups = sorted(layer_decay_parameter_groups(model, args.weight_decay, layer_decay), key=lambda g: -g["lr_scale"])
    for group in groups:
        group["lr"] = args.learning_rate * group["lr_scale"]
    return torch.optim.AdamW(
        groups,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        fused=args.optim == "adamw_torch_fused" or None,
    )


def lars_parameter_groups(model: nn.Module) -> list[dict]:
    """MAE's LARS: layer-wise adaptation for matrices only; biases and 1-D parameters get plain momentum SGD."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim > 1], "always_adapt": True},
        {"params": [p for p in trainable if p.ndim <= 1], "always_adapt": False},
    ]


class SupMAEClassificationTrainer(SupMAEBaseTrainer):
    """
    `Trainer` for `SupMAEForImageClassification` (fine-tuning, linear probing) and for `FeatureProbe` (linear probing
    on cached features):
    - MAE's optimizers: AdamW with layer-wise lr decay (`optimizer_name="adamw"`), or LARS (`"lars"`, timm's, with
      layer adaptation for matrices only); for linear probes at small batches, momentum SGD (`"sgd"`);
    - MAE's losses: soft-target cross-entropy for mixed (mixup / cutmix) targets, label-smoothed cross-entropy for
      hard ones in training, plain cross-entropy in evaluation;
    - top-1 / top-5 accuracy in evaluation, computed offline, optionally restricted to a class subset.
    """

    def __init__(self, *args, optimizer_name="adamw", layer_decay=1.0, label_smoothing=0.0, class_subset=None, **kw):
        kw.setdefault("compute_metrics", classification_metrics)
        kw.setdefault("preprocess_logits_for_metrics", topk_logits_preprocessor(5, class_subset))
        super().__init__(*args, **kw)
        self.optimizer_name, self.layer_decay, self.label_smoothing = optimizer_name, layer_decay, label_smoothing

    def set_class_subset(self, class_subset) -> None:
        """Restrict the evaluation's predictions to these model classes (None: all classes)."""
        self.preprocess_logits_for_metrics = topk_logits_preprocessor(5, class_subset)

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        model = self.model if model is None else model
        learning_rate = self.args.learning_rate
        if self.optimizer_name == "lars":
            from timm.optim import Lars

            self.optimizer = Lars(
                lars_parameter_groups(model), lr=learning_rate, momentum=0.9, weight_decay=self.args.weight_decay
            )
        elif self.optimizer_name == "sgd":
            trainable = [p for p in model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.SGD(
                trainable, lr=learning_rate, momentum=0.9, weight_decay=self.args.weight_decay
            )
        else:
            classifier = getattr(model, "classifier_model", model)  # FeatureProbe wraps the classifier
            self.optimizer = layer_decay_adamw(classifier, self.args, self.layer_decay)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits.float()
        if labels.ndim == 2:  # mixed targets
            loss = torch.sum(-labels * nn.functional.log_softmax(logits, dim=-1), dim=-1).mean()
        else:
            smoothing = self.label_smoothing if model.training else 0.0
            loss = nn.functional.cross_entropy(logits, labels, label_smoothing=smoothing)
        return (loss, outputs) if return_outputs else loss


class FeatureProbe(nn.Module):
    """Linear probing on cached features: `features (B, D)` -> the classifier's `classify` (BatchNorm + Linear). The
    head's parameters are the classifier's own, so training this trains `classifier_model`."""

    def __init__(self, classifier_model: nn.Module):
        super().__init__()
        self.classifier_model = classifier_model

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        return ImageClassifierOutput(logits=self.classifier_model.classify(features))


class _PooledFeatures(nn.Module):
    # The frozen encoder and pooling of a classifier, returning features as "logits" for `Trainer.predict`.
    def __init__(self, classifier_model: nn.Module):
        super().__init__()
        self.classifier_model = classifier_model

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        hidden_states = self.classifier_model.supmae(pixel_values).last_hidden_state
        features = self.classifier_model.pool(hidden_states)
        return ImageClassifierOutput(loss=features.new_zeros(()), logits=features)  # a loss keeps the labels


def extract_features(classifier_model: nn.Module, dataset, args, data_collator) -> dict[str, torch.Tensor]:
    """Pooled features `(N, D)` and labels `(N,)` of a dataset, in order, through the (frozen) encoder: one forward
    pass, split across processes by the Trainer's prediction loop."""
    extractor = SupMAEBaseTrainer(
        model=_PooledFeatures(classifier_model),
        args=args,
        data_collator=data_collator,
        compute_metrics=None,
    )
    prediction = extractor.predict(dataset)
    return {"features": torch.from_numpy(prediction.predictions), "labels": torch.from_numpy(prediction.label_ids)}


class FeatureDataset(torch.utils.data.Dataset):
    """Cached `{"features": (D,), "labels": int}` items."""

    def __init__(self, cache: dict[str, torch.Tensor]):
        self.features, self.labels = cache["features"], cache["labels"]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"features": self.features[index], "labels": self.labels[index]}


def classification_metrics(prediction) -> dict[str, float]:
    """top-1 / top-5 accuracy from `topk_predictions` output (Trainer's `compute_metrics`)."""
    return topk_accuracy(prediction.predictions, prediction.label_ids, ks=(1, 5))
