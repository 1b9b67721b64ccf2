#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
End-to-end pretraining throughput: `run_pretraining.py` itself (our Trainer, its dataloader defaults, the transform,
the collator, the model, fused AdamW, gradient clipping if max_grad_norm > 0, the lr schedule) for N steps on a generated ImageNet-like
set, next to the same model and batch fed from memory, in the same process.

    python benchmarks/end_to_end.py --device cuda --dtype bf16 --compile --batch_size 512 \\
        --runs prepared:cpu,shards:cuda,folder:cpu --workers 16 --json results.json
    python benchmarks/end_to_end.py --tiny --batch_size 8 --steps 4      # the input-bound regime on a small CPU

Data (generated once into --data_dir, reused): real photographs (scikit-learn's two sample photos, cut into distinct
windows, resized to about 500x375, either orientation, re-encoded as JPEG quality 90), in --classes class folders.

  folder     that image folder, read through datasets' imagefolder (`--train_dir`)
  shards     the same files packed into Parquet shards, bytes unchanged (`prepare_dataset --max_side 0`)
  prepared   re-encoded with the shorter side capped (`prepare_dataset --max_side N`, N = --max_side)

Each run is `DATA:DECODE`, DECODE being `cpu` (dataloader workers decode) or `cuda` (`--decode_device cuda`).

How it is measured. `run_pretraining.main` runs unchanged, with `--max_steps` = skip + steps, no evaluation and no
checkpoints; the benchmark adds a callback and times each call of Trainer's `get_batch_samples` (the loop waiting for
its next batch). The first `--skip` steps are not timed: they include compilation and the start of the workers, and
the batches the workers prefetched meanwhile (workers x prefetch factor) are consumed before timing starts, so that
the timed steps see the pipeline's steady state. The device is synchronized at the two ends of the timed window.

  images_per_second              batch x timed steps / wall time of the timed steps
  data_wait_fraction             time in get_batch_samples / that wall time (on CUDA, the GPU idles for at least
                                 that time minus the few ms of queued optimizer work)
  step_only_images_per_second    the same trainer's training_step + clipping (if any) + AdamW + lr schedule on one
                                 batch kept on the device, timed after the run
  mfu_spec (CUDA)                model FLOPs (benchmarks/flops.py) per second / --spec_tflops (989: H100/H200 bf16)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
import transformers
from transformers import TrainerCallback


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import common  # noqa: E402
from flops import pretraining_flops  # noqa: E402
from input_pipeline import photos  # noqa: E402

import run_pretraining  # noqa: E402
from supmae import SupMAEConfig  # noqa: E402
from supmae.configuration_supmae import SUPMAE_PRESETS  # noqa: E402
from supmae.data.gpu_decode import EncodedBatch  # noqa: E402
from supmae.data.prepare import prepare  # noqa: E402


DATA = ("folder", "shards", "prepared")
TINY_OVERRIDES = ",".join(f"{k}={v}" for k, v in common.TINY.items() if k != "num_labels")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda.")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16: --bf16 (autocast).")
    parser.add_argument("--batch_size", type=int, default=8, help="Per-device batch (default 8).")
    parser.add_argument("--preset", default="vit-base-patch16", choices=sorted(SUPMAE_PRESETS), help="Model preset.")
    parser.add_argument("--tiny", action="store_true", help="A tiny model on 32-pixel crops (benchmarks/common.py).")
    parser.add_argument("--compile", action="store_true", help="--torch_compile.")
    parser.add_argument("--compile_mode", default=None, help="--torch_compile_mode (e.g. reduce-overhead).")
    parser.add_argument(
        "--runs",
        default="folder:cpu",
        help="Comma-separated DATA:DECODE runs, DATA in folder|shards|prepared, "
        "DECODE in cpu|cuda (default folder:cpu).",
    )
    parser.add_argument("--steps", type=int, default=20, help="Timed steps per run (default 20).")
    parser.add_argument(
        "--skip", type=int, help="Untimed steps first (default: workers x prefetch factor + 2, at least 2)."
    )
    parser.add_argument("--workers", type=int, help="--dataloader_num_workers (default: run_pretraining's).")
    parser.add_argument("--step_only_steps", type=int, default=10, help="Timed steps fed from memory (default 10).")
    parser.add_argument("--images", type=int, help="Images to generate (default: enough for one epoch of the run).")
    parser.add_argument("--classes", type=int, default=10, help="Class folders (default 10).")
    parser.add_argument("--jpeg_size", default="500x375", help="WxH of the generated JPEGs (default 500x375).")
    parser.add_argument("--max_side", type=int, default=256, help="Shorter-side cap of the prepared data (256).")
    parser.add_argument("--data_dir", help="Where the generated data lives (default: a folder in the temp dir).")
    parser.add_argument("--spec_tflops", type=float, default=989.0, help="Dense bf16 spec for mfu_spec (989).")
    parser.add_argument("--json", "--output", dest="json", help="Append one record per run to this JSON list.")
    args = parser.parse_args(argv)
    args.runs = [tuple(run.split(":")) for run in args.runs.split(",") if run]
    for run in args.runs:
        if len(run) != 2 or run[0] not in DATA or run[1] not in ("cpu", "cuda"):
            parser.error(
                f"--runs takes DATA:DECODE with DATA in {'|'.join(DATA)} and DECODE cpu|cuda; got {':'.join(run)!r}"
            )
    return args


def worker_count(args) -> int:
    """The dataloader workers the run gets: --workers, else run_pretraining's default."""
    if args.workers is not None:
        return args.workers
    from supmae.training.arguments import default_dataloader_workers

    return default_dataloader_workers()


def default_skip(args) -> int:
    workers = worker_count(args)
    return max(2, workers * 2 + 2) if workers else 2  # the DataLoader's default prefetch factor is 2


# ------------------------------------------------------------------------------------------------------------ data
def _write_photos(task) -> int:
    folder, first, count, size, classes = task
    for offset, data in enumerate(photos(count, size, seed=first)):
        index = first + offset
        with open(os.path.join(folder, f"class_{index % classes:03d}", f"img_{index:07d}.jpg"), "wb") as file:
            file.write(data)
    return count


def make_data(root: str, images: int, size: tuple[int, int], classes: int, max_side: int, wanted: set) -> dict:
    """The generated image folder and, as `wanted`, its shards and prepared shards under `root`; reused when a
    previous call made the same. Returns {data: path} and the seconds each took to make."""
    folder = os.path.join(root, f"folder-{images}-{size[0]}x{size[1]}", "train")
    done = os.path.join(os.path.dirname(folder), "complete")
    made = {}
    if not os.path.exists(done):
        start = time.perf_counter()
        shutil.rmtree(os.path.dirname(folder), ignore_errors=True)
        for k in range(classes):
            os.makedirs(os.path.join(folder, f"class_{k:03d}"))
        chunk = 256
        tasks = [(folder, first, min(chunk, images - first), size, classes) for first in range(0, images, chunk)]
        with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
            sum(pool.imap_unordered(_write_photos, tasks))
        open(done, "w").close()
        made["generate_s"] = time.perf_counter() - start
    paths = {"folder": folder}
    for data, cap in (("shards", 0), ("prepared", max_side)):
        if data in wanted:
            paths[data] = os.path.join(root, f"{data}-{images}-{size[0]}x{size[1]}-{cap}")
            start = time.perf_counter()
            if prepare(folder, paths[data], cap, shard_size=1000, progress=False).complete:
                made[f"prepare_{data}_s"] = time.perf_counter() - start
    return {"paths": paths, "made_s": made}


# ------------------------------------------------------------------------------------------------------ measurement
class StepClock(TrainerCallback):
    """Step-end times, the device synchronized at the two ends of the timed window."""

    def __init__(self, device, skip: int, steps: int):
        self.device, self.skip, self.steps = device, skip, steps
        self.ends: dict[int, float] = {}
        self.fetches: list[tuple[float, float]] = []  # (start, end) of each get_batch_samples call

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in (self.skip, self.skip + self.steps):
            common.synchronize(self.device)
        self.ends[state.global_step] = time.perf_counter()


@contextlib.contextmanager
def instrumented_trainers(device, skip: int, steps: int):
    """Every Trainer built inside gets a `StepClock` and a timed `get_batch_samples`; yields the list of
    (trainer, clock) pairs."""
    built = []
    original = transformers.Trainer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        clock = StepClock(device, skip, steps)
        self.add_callback(clock)
        fetch = self.get_batch_samples

        def timed_fetch(*args, **kwargs):
            start = time.perf_counter()
            result = fetch(*args, **kwargs)
            clock.fetches.append((start, time.perf_counter()))
            return result

        self.get_batch_samples = timed_fetch
        built.append((self, clock))

    transformers.Trainer.__init__ = init
    try:
        yield built
    finally:
        transformers.Trainer.__init__ = original


def step_only(trainer, device, steps: int, warmup: int = 3) -> float:
    """Seconds per step of the trainer's own step (training_step, gradient clipping, optimizer and lr schedule) on one
    batch kept on the device."""
    batch = next(iter(trainer.get_train_dataloader()))
    if isinstance(batch["pixel_values"], EncodedBatch):
        batch = trainer.batch_decoder.decode_batch(batch)
    batch = trainer._prepare_inputs(batch)
    model = trainer.model_wrapped

    def step():
        trainer.training_step(model, batch)
        if trainer.args.max_grad_norm and trainer.args.max_grad_norm > 0:
            trainer.accelerator.clip_grad_norm_(model.parameters(), trainer.args.max_grad_norm)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        model.zero_grad()

    for _ in range(warmup):
        step()
    common.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    common.synchronize(device)
    return (time.perf_counter() - start) / steps


def pretraining_argv(args, data: str, decode: str, path: str, output_dir: str, skip: int) -> list[str]:
    argv = ["--train_dir" if data == "folder" else "--dataset_name", path]
    argv += ["--output_dir", output_dir, "--per_device_train_batch_size", str(args.batch_size)]
    argv += ["--max_steps", str(skip + args.steps), "--train_val_split", "0", "--eval_strategy", "no"]
    argv += ["--save_strategy", "no", "--num_figure_images", "0", "--report_to", "none", "--disable_tqdm", "true"]
    argv += ["--logging_steps", str(10**6), "--seed", "0", "--decode_device", decode]
    argv += ["--config_overrides", TINY_OVERRIDES] if args.tiny else ["--config_name", args.preset]
    if args.workers is not None:
        argv += ["--dataloader_num_workers", str(args.workers)]
    if torch.device(args.device).type == "cpu":
        argv += ["--use_cpu", "true"]
    if args.dtype == "bf16":
        argv += ["--bf16", "true"]
    if args.compile:
        argv += ["--torch_compile", "true"] + (
            ["--torch_compile_mode", args.compile_mode] if args.compile_mode else []
        )
    return argv


def measure_run(args, data: str, decode: str, path: str, skip: int) -> dict:
    output_dir = tempfile.mkdtemp(prefix="supmae-e2e-")
    argv = pretraining_argv(args, data, decode, path, output_dir, skip)
    try:
        with instrumented_trainers(args.device, skip, args.steps) as built:
            run_pretraining.main(argv)
        trainer, clock = built[-1]
        first, last = skip, skip + args.steps
        wall = clock.ends[last] - clock.ends[first]
        waits = [end - start for start, end in clock.fetches[first:last]]
        step_s = step_only(trainer, args.device, args.step_only_steps)
        config = trainer.accelerator.unwrap_model(trainer.model).config
        record = {
            "images_per_second": args.batch_size * args.steps / wall,
            "step_only_images_per_second": args.batch_size / step_s,
            "data_wait_fraction": sum(waits) / wall,
            "data_wait_s_per_step": {"median": float(np.median(waits)), "max": float(np.max(waits))},
            "wall_s": wall,
            "workers": trainer.args.dataloader_num_workers,
            "pin_memory": trainer.args.dataloader_pin_memory,
            "optimizer": trainer.args.optim,
            "max_grad_norm": trainer.args.max_grad_norm,
            "argv": ["python", "run_pretraining.py", *argv],
        }
        record["end_to_end_vs_step_only"] = record["images_per_second"] / record["step_only_images_per_second"]
        if torch.device(args.device).type == "cuda":
            flops = pretraining_flops(config, args.batch_size)
            record["mfu_spec"] = flops * args.steps / wall / (args.spec_tflops * 1e12)
            record["step_only_mfu_spec"] = flops / step_s / (args.spec_tflops * 1e12)
        return record
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
        with contextlib.suppress(NameError):
            del trainer, built
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    skip = args.skip if args.skip is not None else default_skip(args)
    width, height = (int(v) for v in args.jpeg_size.lower().split("x"))
    images = args.images or (skip + args.steps + 1) * args.batch_size
    root = args.data_dir or os.path.join(tempfile.gettempdir(), "supmae-end-to-end")
    made = make_data(root, images, (width, height), args.classes, args.max_side, {d for d, _ in args.runs})
    config = SupMAEConfig(**{**SUPMAE_PRESETS[args.preset], **(common.TINY if args.tiny else {})})
    machine = common.machine_info(args.device)
    machine["cores_available"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    records = []
    for data, decode in args.runs:
        record = {
            "benchmark": "end_to_end",
            "machine": machine,
            "run": f"{data}:{decode}",
            "data": data,
            "decode_device": decode,
            "model": "tiny" if args.tiny else args.preset,
            "decoder_layers": config.decoder_num_hidden_layers,
            "batch_size": args.batch_size,
            "dtype": args.dtype,
            "compile": args.compile and (args.compile_mode or "default"),
            "images": images,
            "jpeg_size": args.jpeg_size,
            "max_side": args.max_side if data == "prepared" else None,
            "timed_steps": args.steps,
            "skipped_steps": skip,
            "data_made_s": made["made_s"],
        }
        try:
            record.update(measure_run(args, data, decode, made["paths"][data], skip))
        except Exception as error:  # one failed run is recorded; the others still run
            record["error"] = f"{type(error).__name__}: {' '.join(str(error).split())[:500]}"
        records.append(record)
        print_record(record)
        if args.json:
            common.append_json(args.json, record)
    return records


def print_record(record: dict) -> None:
    head = f"end to end, {record['run']}, {record['model']}, batch {record['batch_size']}, {record['dtype']}"
    if "error" in record:
        print(f"{head}: FAILED: {record['error']}")
        return
    print(
        f"{head}, {record['workers']} workers of {record['machine']['cores_available']} cores: "
        f"{record['images_per_second']:.1f} img/s end to end, {record['step_only_images_per_second']:.1f} img/s "
        f"step only ({record['end_to_end_vs_step_only']:.0%}), data wait {record['data_wait_fraction']:.0%}"
        + (f", MFU {record['mfu_spec']:.1%} of spec" if "mfu_spec" in record else "")
    )


if __name__ == "__main__":
    main()
