# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Several processes: how a stream reaches them, shared BatchNorm statistics (in training, and the main process's
for evaluation), and a check that every replica ends with the same weights."""

import logging
import os

import torch
from torch import nn


logger = logging.getLogger(__name__)


def check_launch(args) -> None:
    """Refuse, while the arguments are read (before anything is written), a run whose parallelism is not what the
    command asked for:
    - launched as one of several processes (torchrun or accelerate set WORLD_SIZE > 1) while the Trainer set up no
      process group: each process would train alone, all into the same --output_dir. On a machine without GPUs this is
      what happens without `--use_cpu true`;
    - `--fsdp` or `--deepspeed` on a CPU: accelerate enables both on accelerators only, and the Trainer would quietly
      train with DDP instead."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and args.world_size == 1:
        hint = "pass --use_cpu true (gloo)" if not torch.cuda.is_available() else "check the launcher's environment"
        raise ValueError(
            f"This process was launched as one of {launched} (WORLD_SIZE={launched}), but the Trainer set up no "
            f"process group, so each process would train alone into the same --output_dir. On a machine without GPUs "
            f"{hint}; with GPUs, {'check that torch sees them' if not torch.cuda.is_available() else hint}."
        )
    if args.device.type == "cpu":
        for flag, value in (("fsdp", args.fsdp), ("deepspeed", args.deepspeed)):
            if value:
                raise ValueError(
                    f"--{flag} runs on GPUs only (accelerate enables it on accelerators): on this CPU the Trainer "
                    f"would quietly train with plain DDP instead. Remove --{flag} on CPUs (DDP with --use_cpu true is "
                    "what runs there), or run on GPUs."
                )


def configure_streaming(training_args, stream) -> None:
    """How a streamed training set reaches the processes. accelerate's default for streams is that process 0 reads and
    decodes every image and sends each process its batches. With at least as many shards as processes, each process
    reads and decodes its own shards instead (accelerate splits a `datasets` stream by shard when it does not
    dispatch); with fewer, process 0 keeps decoding for all, and the log says so."""
    processes, shards = training_args.world_size, getattr(stream, "n_shards", 1)
    if processes > 1 and shards < processes:
        logger.warning(
            f"The stream has {shards} shard(s) for {processes} processes: process 0 reads and decodes every image and "
            f"sends the others their batches. Stream a dataset of at least {processes} Parquet shards (python -m "
            "supmae.prepare_dataset writes them) for each process to decode its own."
        )
        return
    training_args.accelerator_config.dispatch_batches = False


def sync_batch_norm_if_requested(model: nn.Module, args, explicit: bool) -> nn.Module:
    """`model` with its BatchNorm layers sharing their statistics across processes (PyTorch's SyncBatchNorm) when
    `args.sync_batch_norm` asks for it in a multi-process run. SyncBatchNorm runs on GPUs only: a request the user
    made (`explicit`) is refused elsewhere; a recipe's default is left out, with a log line."""
    if not (args.sync_batch_norm and args.world_size > 1):
        return model
    if not torch.cuda.is_available():
        if explicit:
            raise ValueError("--sync_batch_norm needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only).")
        logger.info("No CUDA: each process keeps its own BatchNorm statistics (SyncBatchNorm runs on GPUs only).")
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def share_main_process_buffers(model: nn.Module, args) -> None:
    """In a multi-process run, every process takes the main process's buffers (BatchNorm running statistics), to
    evaluate with them. Without SyncBatchNorm each process's statistics are its own: DDP copies the main process's at
    the start of each training forward, then each process's batch updates its own. Left so, each process would score
    its share of the evaluation set with another model, and only the main process's is saved. All processes call it."""
    if args.world_size > 1:
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer.data, src=0)


def parameters_digest(model: nn.Module) -> torch.Tensor:
    """A float64 fingerprint of all parameters, to compare replicas across processes. (Buffers are left out: the
    head's BatchNorm running statistics are per process under DDP, as in the official code; rank 0's are saved.)"""
    values = [p.detach().double().flatten() for p in model.parameters()]
    flat = torch.cat(values)
    weights = torch.linspace(1.0, 2.0, len(flat), dtype=torch.float64, device=flat.device)
    return torch.stack([flat.sum(), (flat * weights).sum(), (flat * flat).sum()])


def check_replicas_identical(trainer) -> None:
    """With several processes, every replica must hold the same weights at the end (a desync is a bug). Under FSDP
    or ZeRO-3 each process holds its own shard of the parameters, so there is nothing to compare."""
    if trainer.accelerator.num_processes == 1:
        return
    deepspeed = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if trainer.is_fsdp_enabled or (deepspeed is not None and deepspeed.zero_stage == 3):
        logger.info("Parameters sharded across processes (FSDP or ZeRO-3): no replicas to compare.")
        return
    digests = trainer.accelerator.gather(parameters_digest(trainer.model).to(trainer.args.device).unsqueeze(0))
    if not torch.equal(digests, digests[:1].expand_as(digests)):  # the same weights sum to the same bits
        raise RuntimeError(f"The {len(digests)} processes ended with different weights: {digests.tolist()}")
    logger.info(f"Parameters identical across the {len(digests)} processes.")
