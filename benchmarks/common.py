"""Shared pieces of `train_step.py` and `inference.py`: arguments, configs, interleaved timing, peak memory, the
matmul peak that MFU is measured against, the printed table and the JSON record."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import transformers

from supmae import SupMAEConfig
from supmae.configuration_supmae import SUPMAE_PRESETS


# `--tiny`: a model that runs a step in milliseconds on a CPU, for smoke tests of the scripts themselves.
TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=256,
    image_size=32,
    patch_size=8,
    decoder_hidden_size=32,
    decoder_num_hidden_layers=2,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=128,
    supervised_head_hidden_size=64,
    num_labels=10,
)
_SHARED_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "image_size",
    "patch_size",
    "num_channels",
    "qkv_bias",
)
_MAE_FIELDS = (
    "decoder_hidden_size",
    "decoder_num_hidden_layers",
    "decoder_num_attention_heads",
    "decoder_intermediate_size",
    "mask_ratio",
    "norm_pix_loss",
)
MEMORY_TAG = "MEMORY_JSON "
EPILOG = """\
how things are measured:
  time     one step per model per round, interleaved (ours, theirs, ours, theirs, ...) after --warmup untimed steps,
           with the device synchronized around each step; medians over --rounds; ratio = theirs time / ours time.
  FLOPs    analytic model FLOPs from benchmarks/flops.py (matmuls only, a multiply-add = 2 FLOPs; checked against
           torch.utils.flop_counter in tests/test_flops.py).
  MFU      model FLOPs per step / median step time / the best FLOP/s of a --matmul_size square matmul (fp32, or bf16
           under --dtype bf16) measured at the start of the same run.
  memory   cuda: torch.cuda.max_memory_allocated during each model's step (peak stats reset before it) minus the
           memory allocated just before it, plus the model's resident weights, buffers (and optimizer state).
           cpu: a child process imports once and forks one fresh process per model, which builds the model and its
           inputs, reads ru_maxrss (baseline), runs --memory_steps steps and reads it again; peak = the difference,
           raw values in the JSON. It includes the one-time cost of a first step in a fresh process (libraries,
           thread pools: about 30 MiB on the development machine, which is what --tiny models show).
  output   --output appends one record (machine: date, device name, CPU count, torch threads, versions; the
           arguments; every measurement) to a JSON list, so several runs can share one file.
"""


@dataclass
class Arm:
    """One model under test. `make_step(batch_size, image_size)` builds inputs and returns a no-argument step."""

    label: str
    make_step: Callable[[int, int], Callable[[], None]]
    flops: Callable[[int, int], int]  # (batch_size, image_size) -> FLOPs of one step
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None = None

    def resident_bytes(self) -> int:
        """Weights, buffers and optimizer state."""
        state = [t for s in self.optimizer.state.values() for t in s.values()] if self.optimizer else []
        return sum(
            t.numel() * t.element_size()
            for t in [*self.model.parameters(), *self.model.buffers(), *state]
            if isinstance(t, torch.Tensor)
        )


def add_arguments(parser: argparse.ArgumentParser, default_preset: str) -> None:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda.")
    parser.add_argument(
        "--dtype", choices=("fp32", "bf16"), default="fp32", help="fp32, or bf16 through torch.autocast."
    )
    parser.add_argument("--batch_size", type=int, help="Images per step (default: 64 on cuda, 8 on cpu).")
    parser.add_argument(
        "--image_size",
        type=int,
        help="Input side in pixels (default: the config's, 224). Other sizes run both models with "
        "interpolate_pos_encoding=True.",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile both models (dynamic=False).")
    parser.add_argument(
        "--compile_mode",
        choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
        default="default",
        help="torch.compile mode with --compile; reduce-overhead runs the compiled graphs as CUDA graphs.",
    )
    parser.add_argument("--rounds", type=int, default=10, help="Timed rounds; each round times one step per model.")
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="Untimed steps per model before the rounds (at least 1 on cuda, so that the first step's one-time "
        "allocations, such as the AdamW state, stay out of the step's peak memory).",
    )
    parser.add_argument(
        "--preset", default=default_preset, choices=sorted(SUPMAE_PRESETS), help="SupMAE architecture preset."
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="A tiny model for smoke runs (hidden 64, 2 layers, 32 px images, 8 px patches, 2-block 32-wide decoder).",
    )
    parser.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa", help="Attention of both models.")
    parser.add_argument(
        "--sweep",
        help="Repeat the measurement over values of one option, e.g. batch=8,16,32 or image_size=224,384.",
    )
    parser.add_argument(
        "--matmul_size",
        type=int,
        help="Side of the square matmul for the MFU peak (default 8192 cuda, 2048 cpu, 512 with --tiny).",
    )
    parser.add_argument(
        "--memory_steps", type=int, default=3, help="Steps run by each CPU memory child process (default 3)."
    )
    parser.add_argument("--output", help="Append this run's record to a JSON list in this file.")
    parser.add_argument("--memory_child", help=argparse.SUPPRESS)  # internal: the models whose CPU memory to measure


def supmae_config(args, **overrides) -> SupMAEConfig:
    """The preset (plus `--tiny`), SupMAE's defaults otherwise: LayerNorm eps 1e-6, norm_pix_loss, 1000 labels."""
    fields = {**SUPMAE_PRESETS[args.preset], **(TINY if args.tiny else {}), **overrides}
    return SupMAEConfig(**fields, attn_implementation=args.attn)


def transformers_config(config_class, config: SupMAEConfig, mae: bool, **extra):
    """A ViTMAEConfig (`mae=True`: decoder, mask ratio, norm_pix_loss too) or ViTConfig with `config`'s
    architecture, LayerNorm eps included."""
    fields = _SHARED_FIELDS + (_MAE_FIELDS if mae else ())
    return config_class(**{name: getattr(config, name) for name in fields}, **extra)


def prepare(model: torch.nn.Module, args) -> torch.nn.Module:
    model = model.to(args.device)
    if not args.compile:
        return model
    return torch.compile(model, dynamic=False, mode=None if args.compile_mode == "default" else args.compile_mode)


def mark_step(args) -> None:
    """Before each step: CUDA graphs (compile mode reduce-overhead) reuse their outputs' memory from one step to the
    next; this tells them a new step begins."""
    if args.compile and "reduce-overhead" in args.compile_mode:
        torch.compiler.cudagraph_mark_step_begin()


def autocast(args):
    if args.dtype == "bf16":
        return torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(device, dtype: str = "fp32", size: int | None = None, repeats: int = 10) -> float:
    """Best FLOP/s of a `size` x `size` matmul (2 size^3 FLOPs) in `dtype` ("fp32" or "bf16") on `device`.

    The product is `F.linear(a, b)` (= a @ b.T), the op behind the models' Linear layers: on a CPU, bf16 reaches
    oneDNN only through it (`torch.mm` in bf16 is ten times slower there); on CUDA both are the same cuBLAS GEMM."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 2048)
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    a = torch.randn(size, size, device=device, dtype=torch_dtype)
    b = torch.randn(size, size, device=device, dtype=torch_dtype)
    best = float("inf")
    for i in range(repeats + 2):  # two untimed warm-up products
        synchronize(device)
        start = time.perf_counter()
        F.linear(a, b)
        synchronize(device)
        if i >= 2:
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def machine_info(device) -> dict:
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
            name = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), name)
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "cuda_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }


def sweep_points(args) -> list[tuple[int, int]]:
    """(batch_size, image_size) pairs to measure: one, or one per `--sweep` value."""
    points = [(args.batch_size, args.image_size)]
    if args.sweep and not args.memory_child:
        name, _, values = args.sweep.partition("=")
        values = [int(v) for v in values.split(",") if v]
        if name in ("batch", "batch_size"):
            points = [(v, args.image_size) for v in values]
        elif name == "image_size":
            points = [(args.batch_size, v) for v in values]
        else:
            raise ValueError(f"--sweep takes batch=... or image_size=..., got {args.sweep!r}.")
    return points


def time_interleaved(steps: dict[str, Callable[[], None]], args) -> tuple[dict, dict]:
    """Warm up, then `args.rounds` rounds of one timed step per model, in order (ours, theirs, ours, theirs, ...).
    Returns per-model step times in seconds and, on CUDA, the peak bytes allocated above the resident state."""
    cuda = torch.device(args.device).type == "cuda"
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    step_peak = dict.fromkeys(steps, 0)
    for _ in range(args.rounds):
        for name, step in steps.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats(args.device)
                base = torch.cuda.memory_allocated(args.device)
            synchronize(args.device)
            start = time.perf_counter()
            step()
            synchronize(args.device)
            times[name].append(time.perf_counter() - start)
            if cuda:
                step_peak[name] = max(step_peak[name], torch.cuda.max_memory_allocated(args.device) - base)
    return times, step_peak


def memory_in_child(script: str, argv: list[str], names: list[str], batch_size: int, image_size: int) -> dict:
    """Run `script` again in a child process that measures each model's resident-memory peaks in its own process."""
    command = [sys.executable, script, *argv, "--batch_size", str(batch_size), "--image_size", str(image_size)]
    done = subprocess.run(command + ["--memory_child", ",".join(names)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"memory child failed:\n{done.stderr[-3000:]}")
    reports = [json.loads(line[len(MEMORY_TAG) :]) for line in done.stdout.splitlines() if line.startswith(MEMORY_TAG)]
    return {report.pop("name"): report for report in reports}


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def run_memory_children(build_arm: Callable[[str], Arm], names: list[str], args) -> dict:
    """In the child: fork one fresh process per model (imports done once, no tensor op run yet, so every ru_maxrss
    starts clean); each builds its model and inputs, takes the ru_maxrss baseline, runs `--memory_steps` steps and
    takes it again."""
    for name in names:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                step = build_arm(name).make_step(args.batch_size, args.image_size)
                gc.collect()
                baseline = _max_rss_bytes()
                for _ in range(args.memory_steps):
                    step()
                after = _max_rss_bytes()
                report = {"max_rss_after_build_bytes": baseline, "max_rss_after_steps_bytes": after}
                print(MEMORY_TAG + json.dumps({"name": name, **report, "peak_bytes": after - baseline}), flush=True)
                code = 0
            finally:
                os._exit(code)
        if os.waitpid(pid, 0)[1]:
            raise RuntimeError(f"measuring the memory of {name} failed")
    return {}


def memory_method(args, what: str) -> str:
    if torch.device(args.device).type == "cuda":
        return (
            "cuda: peak_bytes = resident_bytes (weights, buffers and any optimizer state) "
            f"+ step_peak_bytes (torch.cuda.max_memory_allocated during one {what}, reset before each model's step, "
            "minus the memory allocated just before it); max over rounds"
        )
    return (
        "cpu: one fresh process per model (forked from a child that only imported); peak_bytes = ru_maxrss after "
        f"{args.memory_steps} x {what} minus ru_maxrss after building the model and its inputs (raw values alongside)"
        + ("; with --compile the compiler's own memory is included" if args.compile else "")
    )


def run(args, argv: list[str], script: str, build_arm: Callable, keys, comparisons, what: str) -> dict:
    """Measure the arm `build_arm(args, key)` of every key at every sweep point; print a table per point; append the
    record to `--output`. Under `--memory_child` (the CPU memory measurement's child) measure memory only."""
    if args.memory_child:
        return run_memory_children(lambda key: build_arm(args, key), args.memory_child.split(","), args)
    arms = {key: build_arm(args, key) for key in keys}
    cuda = torch.device(args.device).type == "cuda"
    peak_flops = measure_matmul_peak(args.device, args.dtype, args.matmul_size)
    record = {
        "script": os.path.basename(script),
        "machine": machine_info(args.device),
        "args": {k: v for k, v in vars(args).items() if k != "memory_child"},
        "matmul_peak_flops": peak_flops,
        "memory_method": memory_method(args, what),
        "results": [],
    }
    for batch_size, image_size in sweep_points(args):
        steps = {name: arm.make_step(batch_size, image_size) for name, arm in arms.items()}
        times, step_peak = time_interleaved(steps, args)
        del steps
        gc.collect()
        point = {"batch_size": batch_size, "image_size": image_size, "arms": {}, "comparisons": []}
        cpu_memory = {} if cuda else memory_in_child(script, argv, list(arms), batch_size, image_size)
        for name, arm in arms.items():
            median = statistics.median(times[name])
            flops = arm.flops(batch_size, image_size)
            if cuda:
                resident = arm.resident_bytes()
                memory = {"resident_bytes": resident, "step_peak_bytes": step_peak[name]}
                memory["peak_bytes"] = resident + step_peak[name]
            else:
                memory = cpu_memory[name]
            point["arms"][name] = {
                "label": arm.label,
                "median_s": median,
                "times_s": times[name],
                "images_per_s": batch_size / median,
                "flops_per_step": flops,
                "achieved_flops": flops / median,
                "mfu": flops / median / peak_flops,
                "memory": memory,
            }
        for title, ours, theirs in comparisons:
            ratio = point["arms"][theirs]["median_s"] / point["arms"][ours]["median_s"]
            point["comparisons"].append({"name": title, "ours": ours, "theirs": theirs, "ratio": ratio})
        record["results"].append(point)
        print_point(point, args, peak_flops)
        if args.output:  # after every point, so that a run cut short by its time budget keeps what it measured
            append_json(args.output, record, replace_last=len(record["results"]) > 1)
    print(f"memory: {record['memory_method']}")
    return record


def print_point(point: dict, args, peak_flops: float) -> None:
    print(
        f"\nbatch {point['batch_size']}, {point['image_size']} px, {args.device}, {args.dtype}"
        f"{compile_label(args)}; matmul peak {peak_flops / 1e12:.3f} TFLOP/s"
    )
    print(f"{'model':<44} {'img/s':>9} {'ms/step':>9} {'GFLOP/step':>11} {'MFU':>7} {'peak MiB':>9}")
    for arm in point["arms"].values():
        print(
            f"{arm['label']:<44} {arm['images_per_s']:>9.1f} {arm['median_s'] * 1e3:>9.2f} "
            f"{arm['flops_per_step'] / 1e9:>11.2f} {arm['mfu']:>7.1%} {arm['memory']['peak_bytes'] / 2**20:>9.1f}"
        )
    for comparison in point["comparisons"]:
        print(f"ratio {comparison['name']} (theirs time / ours time): {comparison['ratio']:.3f}")


def compile_label(args) -> str:
    if not args.compile:
        return ""
    return ", compiled" + ("" if args.compile_mode == "default" else f" ({args.compile_mode})")


@contextlib.contextmanager
def torch_threads(count: int):
    """Run the block with `count` torch threads (images/s per core, say), then restore the previous number."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def append_json(path: str, record: dict, replace_last: bool = False) -> None:
    """Keep `path` a JSON list of run records, appending this one (or, `replace_last`, putting it in place of the last
    one: a record growing as a run goes). Written to a temporary file first, so that a run killed meanwhile leaves the
    file as it was."""
    records = []
    if os.path.exists(path):
        with open(path) as f:
            records = json.load(f)
    records = records if isinstance(records, list) else [records]
    records = records[:-1] if replace_last and records else records
    with open(path + ".partial", "w") as f:
        json.dump(records + [record], f, indent=1)
        f.write("\n")
    os.replace(path + ".partial", path)


def finish_arguments(args) -> None:
    """Fill the defaults that depend on the device and the config."""
    cuda = torch.device(args.device).type == "cuda"
    if args.batch_size is None:
        args.batch_size = 64 if cuda else 8
    if args.image_size is None:
        image_size = supmae_config(args).image_size
        args.image_size = image_size if isinstance(image_size, int) else image_size[0]
    if cuda:
        args.warmup = max(args.warmup, 1)
    if args.tiny and args.matmul_size is None:
        args.matmul_size = 512
