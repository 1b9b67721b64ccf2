"""Soak: thousands of tiny pretraining steps through the real pieces (digits -> TransformedImageDataset ->
dataloader workers re-created every epoch -> SupMAETrainer with checkpoints rotated every --save_steps), recording
the training process's resident memory and the throughput of every --window steps.

    python benchmarks/soak.py --steps 3000 --output benchmarks/results/soak.json

Prints one row per window and a summary: memory growth after warm-up, and the median throughput of the last
quarter of the windows over the first quarter's. Numbers are recorded, not asserted (tests/test_benchmarks.py runs a short soak and bounds the memory
growth only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch
import transformers
from transformers import TrainerCallback

from supmae import SupMAEConfig, SupMAEForPreTraining
from supmae.data.collators import ImageCollator
from supmae.data.datasets import TransformedImageDataset
from supmae.data.sources import digits_datasets
from supmae.data.transforms import PretrainingTransform
from supmae.training.arguments import SupMAETrainingArguments
from supmae.training.pretraining import SupMAETrainer


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


# A 32 px, 2-layer, 32-wide SupMAE: a step costs milliseconds, so the loop around it is what is soaked.
CONFIG = dict(
    image_size=32,
    patch_size=8,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    decoder_hidden_size=16,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=32,
    supervised_head_hidden_size=16,
    num_labels=10,
)


def resident_mib() -> float:
    """This process's resident memory now (VmRSS), in MiB."""
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib / 1024


class Recorder(TrainerCallback):
    def __init__(self, window: int):
        self.window, self.rows, self.start = window, [], None

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is None:
            self.start = (state.global_step, time.perf_counter())
        elif state.global_step % self.window == 0:
            step, now = state.global_step, time.perf_counter()
            self.rows.append(
                {
                    "step": step,
                    "rss_mib": round(resident_mib(), 1),
                    "steps_per_s": round((step - self.start[0]) / (now - self.start[1]), 2),
                }
            )
            print(
                f"step {step:6d}  rss {self.rows[-1]['rss_mib']:8.1f} MiB  {self.rows[-1]['steps_per_s']:7.2f} steps/s"
            )
            self.start = (step, time.perf_counter())


def soak(steps: int, window: int, batch_size: int, workers: int, save_steps: int, output_dir: str) -> dict:
    transformers.set_seed(0)
    train = digits_datasets()["train"]
    dataset = TransformedImageDataset(train, "image", "label", PretrainingTransform(32), seed=0)
    args = SupMAETrainingArguments(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=1e-3,
        logging_steps=window,
        save_steps=save_steps,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=workers,
        use_cpu=True,
        seed=0,
    )
    recorder = Recorder(window)
    trainer = SupMAETrainer(
        model=SupMAEForPreTraining(SupMAEConfig(**CONFIG)),
        args=args,
        train_dataset=dataset,
        data_collator=ImageCollator(10),
        callbacks=[recorder],
    )
    started = time.perf_counter()
    trainer.train()
    rows = recorder.rows
    settled = rows[min(2, len(rows) - 1)]  # after warm-up: allocator pools, first checkpoint, worker start-up
    summary = {
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 1),
        "rss_mib_after_warmup": settled["rss_mib"],
        "rss_mib_at_end": rows[-1]["rss_mib"],
        "rss_growth_mib_after_warmup": round(rows[-1]["rss_mib"] - settled["rss_mib"], 1),
        "rss_mib_max": max(r["rss_mib"] for r in rows),
        # Windows are noisy on a shared 2-core machine: compare the medians of the first and last quarters.
        "steps_per_s_first_quarter": statistics.median(r["steps_per_s"] for r in rows[: max(1, len(rows) // 4)]),
        "steps_per_s_last_quarter": statistics.median(r["steps_per_s"] for r in rows[-max(1, len(rows) // 4) :]),
        "checkpoints_left": sorted(n for n in os.listdir(output_dir) if n.startswith("checkpoint-")),
    }
    summary["last_over_first_quarter"] = round(
        summary["steps_per_s_last_quarter"] / summary["steps_per_s_first_quarter"], 3
    )
    return {"summary": summary, "windows": rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--window", type=int, default=100, help="Steps per recorded row.")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="Dataloader workers (re-created every epoch).")
    parser.add_argument("--save_steps", type=int, default=500)
    parser.add_argument("--output", help="Append the record to this JSON list.")
    options = parser.parse_args(argv)
    with common.torch_threads(1), tempfile.TemporaryDirectory() as output_dir:
        record = soak(
            options.steps, options.window, options.batch_size, options.workers, options.save_steps, output_dir
        )
    record = {
        "benchmark": "soak",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, 1 training thread",
        "arguments": vars(options),
        **record,
    }
    print(json.dumps(record["summary"], indent=1))
    if options.output:
        common.append_json(options.output, record)
    return record


if __name__ == "__main__":
    main()
