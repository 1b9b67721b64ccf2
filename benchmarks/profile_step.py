#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
Where a training step's time goes: torch.profiler over a few steps of SupMAE's recipe (default ViT-B/16, 1-block
decoder, fused AdamW, the step of benchmarks/train_step.py), the kernels grouped by what they do.

    python benchmarks/profile_step.py --device cuda --dtype bf16 --compile --batch_size 512 --profile_dir DIR
    python benchmarks/profile_step.py --tiny --steps 2                  # a smoke run on a CPU

It writes DIR/profile-<device>-<preset>-b<batch>.txt: the step's median time, FLOPs and MFU; the device time per
step by category (GEMM, attention, LayerNorm, GELU, masking gathers and sorts, AdamW, copies, ...); the device idle
time (wall time not covered by kernels: launch gaps, host work); the top kernels; and the profiler's own table.
`--output` appends the same numbers to a JSON list; `--trace` also writes a Chrome trace.

On CUDA the categories are over kernels' own device time; on a CPU over operators' own CPU time (then "idle" is
not meaningful and is left out). A kernel belongs to the first category whose keywords its name contains
(CATEGORIES below, in order), so a fused kernel is counted once, under its first match.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import train_step  # noqa: E402


CATEGORIES = (
    ("attention", ("flash", "fmha", "attention", "sdpa", "scaled_dot_product")),
    (
        "GEMM (matmuls, patch convolution)",
        (
            "gemm",
            "cutlass",
            "nvjet",
            "xmma",
            "cublas",
            "wgmma",
            "aten::mm",
            "aten::addmm",
            "aten::bmm",
            "aten::_addmm_activation",
            "mkldnn_",
            "onednn",
            "convolution",
            "conv2d",
            "implicit_",
        ),
    ),
    ("AdamW", ("adam", "multi_tensor", "foreach")),
    ("LayerNorm", ("layer_norm", "layernorm")),
    ("GELU", ("gelu",)),
    ("BatchNorm (supervised head)", ("batch_norm", "batchnorm")),
    ("masking: sort, gather, scatter", ("sort", "radix", "gather", "scatter", "index", "cub::", "take")),
    ("softmax, losses", ("softmax", "cross_entropy", "nll_loss", "mse")),
    ("copies, casts, fills", ("memcpy", "memset", "copy", "cast", "clone", "cat_", "fill", "aten::cat", "to_copy")),
    ("reductions", ("reduce", "sum", "mean", "norm", "var")),
    ("other fused elementwise (Triton)", ("triton",)),
    ("other elementwise", ("elementwise", "vectorized", "unrolled", "aten::add", "aten::mul", "aten::div")),
)


def category(name: str) -> str:
    lowered = name.lower()
    for label, keywords in CATEGORIES:
        if any(keyword in lowered for keyword in keywords):
            return label
    return "other"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_arguments(parser, default_preset="vit-base-patch16")
    parser.add_argument("--steps", type=int, default=5, help="Profiled steps (default 5).")
    parser.add_argument("--optimizer", choices=("fused", "default"), default="fused", help="AdamW implementation.")
    parser.add_argument("--profile_dir", default=".", help="Where the report (and trace) go (default: here).")
    parser.add_argument("--trace", action="store_true", help="Also write a Chrome trace (large on a GPU).")
    parser.add_argument("--spec_tflops", type=float, default=989.0, help="Dense bf16 spec for MFU (989: H100/H200).")
    args = parser.parse_args(argv)
    args.comparison = "profile"
    common.finish_arguments(args)
    return args


def own_time(event, cuda: bool) -> float:
    """An event's own time in microseconds: device time of kernels on CUDA, CPU time of operators on a CPU."""
    if cuda:
        return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0)
    return event.self_cpu_time_total


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    cuda = torch.device(args.device).type == "cuda"
    depth = common.supmae_config(args).decoder_num_hidden_layers
    arm = train_step.build_arm(args, f"supmae_dec{depth}_{args.optimizer}")
    step = arm.make_step(args.batch_size, args.image_size)
    for _ in range(args.warmup):  # compilation, AdamW state, allocator warm-up
        step()
    times = []
    for _ in range(args.rounds):
        common.synchronize(args.device)
        start = time.perf_counter()
        step()
        common.synchronize(args.device)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    common.synchronize(args.device)
    with profile(activities=activities) as profiler:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        common.synchronize(args.device)
        profiled_wall = time.perf_counter() - start
    events = [e for e in profiler.key_averages() if own_time(e, cuda) > 0]
    if cuda:  # kernels only: the operators that launch them carry the same device time again
        events = [e for e in events if e.device_type == DeviceType.CUDA]
    else:  # the profiler's own step markers and compiled-region wrappers are not work
        events = [e for e in events if not e.key.startswith(("ProfilerStep", "Torch-Compiled Region"))]
    total = sum(own_time(e, cuda) for e in events) / 1e6 / args.steps  # seconds per step
    by_category: dict[str, float] = {}
    for event in events:
        label = category(event.key)
        by_category[label] = by_category.get(label, 0.0) + own_time(event, cuda) / 1e6 / args.steps
    flops = arm.flops(args.batch_size, args.image_size)
    record = {
        "script": "profile_step.py",
        "machine": common.machine_info(args.device),
        "args": vars(args),
        "step_s": step_s,
        "profiled_step_s": profiled_wall / args.steps,
        "flops_per_step": flops,
        "mfu_spec": flops / step_s / (args.spec_tflops * 1e12) if cuda else None,
        "busy_s_per_step": total,
        "idle_s_per_step": max(0.0, profiled_wall / args.steps - total) if cuda else None,
        "categories_s_per_step": dict(sorted(by_category.items(), key=lambda kv: -kv[1])),
        "top": [
            {
                "name": e.key[:160],
                "category": category(e.key),
                "s_per_step": own_time(e, cuda) / 1e6 / args.steps,
                "calls_per_step": e.count / args.steps,
            }
            for e in sorted(events, key=lambda e: -own_time(e, cuda))[:25]
        ],
    }
    os.makedirs(args.profile_dir, exist_ok=True)
    name = f"profile-{args.device.split(':')[0]}-{'tiny' if args.tiny else args.preset}-b{args.batch_size}"
    record["report"] = os.path.join(args.profile_dir, name + ".txt")
    with open(record["report"], "w") as file:
        file.write(report(record, args, cuda))
        file.write("\n\ntorch.profiler, own time, top 40:\n")
        sort_by = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        file.write(profiler.key_averages().table(sort_by=sort_by, row_limit=40))
    if args.trace:
        profiler.export_chrome_trace(os.path.join(args.profile_dir, name + ".trace.json"))
    print(report(record, args, cuda))
    print(f"profile written to {record['report']}")
    if args.output:
        common.append_json(args.output, record)
    return record


def report(record: dict, args, cuda: bool) -> str:
    step_ms, what = record["step_s"] * 1e3, "device (kernel)" if cuda else "CPU (operator)"
    lines = [
        f"SupMAE {args.preset if not args.tiny else 'tiny'}, batch {args.batch_size}, {args.image_size} px, "
        f"{args.device}, {args.dtype}{common.compile_label(args)}, {args.optimizer} AdamW",
        f"step {step_ms:.2f} ms (median of {args.rounds}), {record['flops_per_step'] / 1e9:.1f} GFLOP"
        + (f", MFU {record['mfu_spec']:.1%} of {args.spec_tflops:g} TFLOP/s" if cuda else ""),
        f"{what} time per step by category ({args.steps} profiled steps, {record['profiled_step_s'] * 1e3:.2f} ms "
        "each under the profiler):",
    ]
    busy = record["busy_s_per_step"]
    for label, seconds in record["categories_s_per_step"].items():
        lines.append(f"  {label:<34} {seconds * 1e3:9.2f} ms  {seconds / busy:6.1%}")
    if cuda:
        lines.append(f"  {'device idle (launch gaps, host)':<34} {record['idle_s_per_step'] * 1e3:9.2f} ms")
    lines.append("top kernels:" if cuda else "top operators:")
    for entry in record["top"][:15]:
        lines.append(
            f"  {entry['s_per_step'] * 1e3:8.2f} ms  {entry['calls_per_step']:6.1f}x  "
            f"[{entry['category']}] {entry['name'][:100]}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
