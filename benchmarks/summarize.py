#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
The end-to-end suite's results as one table (the last thing `run_gpu.sh` prints), or the best batch of its step sweep.

    python benchmarks/summarize.py results.json
    python benchmarks/summarize.py results.json --best_batch [--at_most 1024] [--default 512]

Reads the JSON list the benchmarks append to: gpu_decode_check, segmentation_step, input_pipeline, train_step (fused vs default AdamW,
compile modes), end_to_end and profile_step records. MFU "of spec" is model FLOPs per second over --spec_tflops (989,
the H100/H200 dense bf16 figure); the train-step tables also give MFU of the matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def load(path: str) -> list[dict]:
    try:
        with open(path) as file:
            records = json.load(file)
    except (OSError, ValueError):
        return []
    return records if isinstance(records, list) else [records]


def step_points(records: list[dict]) -> list[dict]:
    """One row per (train_step record, batch, arm) of SupMAE's 1-block recipe."""
    rows = []
    for record in records:
        if record.get("script") != "train_step.py":
            continue
        args = record["args"]
        mode = (
            "compiled" + ("" if args.get("compile_mode", "default") == "default" else f" ({args['compile_mode']})")
            if args.get("compile")
            else "eager"
        )
        for point in record["results"]:
            for key, arm in point["arms"].items():
                if not key.startswith("supmae_dec1"):
                    continue
                optimizer = key.split("_")[2] if key.count("_") >= 2 else args.get("optimizer", "default")
                rows.append(
                    {
                        "batch": point["batch_size"],
                        "mode": mode,
                        "optimizer": optimizer,
                        "images_per_second": arm["images_per_s"],
                        "achieved_flops": arm["achieved_flops"],
                        "mfu_measured_peak": arm["mfu"],
                        "device": record["machine"]["device"],
                    }
                )
    return rows


def best_batch(records: list[dict], at_most: int | None, default: int) -> int:
    """The batch with the most images/s of the 1-block recipe, fused AdamW, compiled in the default mode."""
    rows = [r for r in step_points(records) if r["optimizer"] == "fused" and r["mode"] == "compiled"]
    rows = [r for r in rows if at_most is None or r["batch"] <= at_most]
    return max(rows, key=lambda r: r["images_per_second"])["batch"] if rows else default


def table(records: list[dict], spec_tflops: float) -> str:
    lines = []
    for record in records:
        if record.get("benchmark") == "gpu_decode_check":
            lines.append(
                f"GPU decode vs CPU path ({record['machine']['device_name']}): "
                f"{'AGREES' if record['agrees'] else 'DISAGREES'}; mean |diff| {record['mean_abs_difference']:.3f}, "
                f"max {record['max_abs_difference']:.0f} gray levels (tolerance mean < {record['tolerance']['mean']}, "
                f"max < {record['tolerance']['max']}); BatchDecoder {record['batch_decoder_images_per_second']:.0f} "
                f"img/s, decode alone {record['decode_only_images_per_second']:.0f} img/s"
            )
        elif record.get("benchmark") == "input_pipeline" and "ratio_prepared" in record:
            per_core = record["images_per_second_per_core"]
            lines.append(
                f"input pipeline per core ({record['jpeg_size']}): ours {per_core['ours']:.0f}, ours on prepared "
                f"(<= {record['prepared_max_side']}) {per_core['ours_prepared']:.0f}, torchvision "
                f"{per_core['torchvision']:.0f} img/s: {record['ratio']:.2f}x and {record['ratio_prepared']:.2f}x"
            )
        elif record.get("benchmark") == "fsdp_check":
            result = record["result"]
            if result["problems"]:
                lines.append(f"FSDP check: FAILED ({', '.join(result['problems'])})")
            else:
                how = "FSDP" if result["fsdp_enabled"] else f"no FSDP ({result['reason']})"
                lines.append(
                    f"FSDP check ({record['machine']['device_name']}): {how}, wrapped as {result['wrapped_model']}; "
                    f"killed and resumed from {os.path.basename(result['resumed_from'] or '?')}; largest weight "
                    f"difference to the uninterrupted run {result['max_weight_difference']:.2g}"
                )
        elif record.get("script") == "segmentation_step.py":
            for point in record["results"]:
                arms, ratio = point["arms"], point["comparisons"][0]["ratio"]
                memory = [arm.get("memory", {}).get("peak_bytes") for arm in arms.values()]
                lines.append(
                    f"segmentation step (UperNet, {point['image_size']} px, batch {point['batch_size']}): "
                    + ", ".join(f"{arm['label']} {arm['images_per_s']:.3g} img/s" for arm in arms.values())
                    + f": {ratio:.2f}x"
                    + (f"; peak {' vs '.join(f'{m / 2**30:.1f}' for m in memory)} GiB" if all(memory) else "")
                )
    steps = step_points(records)
    if steps:
        lines += [
            "",
            "training step, SupMAE ViT-B/16 1-block recipe:",
            f"{'batch':>6} {'mode':<28} {'AdamW':<8} {'img/s':>9} {'MFU spec':>9} {'MFU peak':>9}",
        ]
        for r in sorted(steps, key=lambda r: (r["mode"], r["batch"], r["optimizer"])):
            spec = f"{r['achieved_flops'] / (spec_tflops * 1e12):.1%}" if r["device"] == "cuda" else "-"
            lines.append(
                f"{r['batch']:>6} {r['mode']:<28} {r['optimizer']:<8} {r['images_per_second']:>9.0f} "
                f"{spec:>9} {r['mfu_measured_peak']:>9.1%}"
            )
    runs = [r for r in records if r.get("benchmark") == "end_to_end"]
    if runs:
        lines += [
            "",
            "end to end (run_pretraining.py, Trainer):",
            f"{'run':<14} {'batch':>6} {'workers':>8} {'img/s':>9} {'step-only':>10} {'e2e/step':>9} "
            f"{'data wait':>10} {'MFU spec':>9}",
        ]
        for r in runs:
            if "error" in r:
                lines.append(f"{r['run']:<14} {r['batch_size']:>6} FAILED: {r['error'][:90]}")
                continue
            mfu = f"{r['mfu_spec']:.1%}" if r.get("mfu_spec") is not None else "-"
            lines.append(
                f"{r['run']:<14} {r['batch_size']:>6} {r['workers']:>8} {r['images_per_second']:>9.0f} "
                f"{r['step_only_images_per_second']:>10.0f} {r['end_to_end_vs_step_only']:>9.0%} "
                f"{r['data_wait_fraction']:>10.0%} {mfu:>9}"
            )
    for record in records:
        if record.get("script") == "profile_step.py":
            busy = record["busy_s_per_step"]
            parts = [f"{label} {seconds / busy:.0%}" for label, seconds in record["categories_s_per_step"].items()]
            idle = record.get("idle_s_per_step")
            lines += [
                "",
                f"profile, batch {record['args']['batch_size']}, step {record['step_s'] * 1e3:.1f} ms"
                + (f", device idle {idle * 1e3:.1f} ms/step" if idle is not None else "")
                + f" ({record['report']}):",
                "  " + ", ".join(parts[:8]),
            ]
    return "\n".join(lines) if lines else "no end-to-end suite records"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="The JSON list of records.")
    parser.add_argument("--best_batch", action="store_true", help="Print only the best batch of the step sweep.")
    parser.add_argument("--at_most", type=int, help="With --best_batch: consider batches up to this one.")
    parser.add_argument("--default", type=int, default=512, help="With --best_batch: when there is no sweep (512).")
    parser.add_argument("--spec_tflops", type=float, default=989.0, help="Dense bf16 spec for MFU (989).")
    args = parser.parse_args(argv)
    records = load(args.results)
    print(best_batch(records, args.at_most, args.default) if args.best_batch else table(records, args.spec_tflops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
