"""Run `make demo` (the pretraining demo, then the fine-tuning demo) in a scratch folder and record what it printed.

    python examples/record_demo.py --record docs/records/demo.json

The record holds the command, the date, the machine (with its load average before and after: the wall times are only
as quiet as the machine was), the package versions, each script's printed lines and wall time, and the fine-tuning
demo's validation and test top-1 (the numbers the README and docs/CLASSIFICATION.md state; tests/test_docs.py checks
them against this file).
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers


ROOT = Path(__file__).resolve().parent.parent
TOP1 = re.compile(r"^(validation|test): top-1 (\d\.\d+)$")


def run_demo(script: str, folder: Path) -> dict:
    """`python SCRIPT` with no arguments (its demo) in `folder`: the lines it printed and its wall time."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(ROOT / script)],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{script} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return {"printed": result.stdout.strip().splitlines(), "seconds": round(seconds, 1)}


def machine() -> dict:
    with open("/proc/cpuinfo") as cpuinfo:  # the CPU's model name (Linux)
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    return {"cpu": cpu or platform.machine(), "platform": platform.platform(), "cpu_count": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", metavar="PATH", required=True, help="where to write the JSON record")
    args = parser.parse_args()
    if os.environ.get("SUPMAE_QUICK"):
        parser.error("SUPMAE_QUICK is set: the record is of the full demo; unset it.")
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        pretraining = run_demo("run_pretraining.py", Path(scratch))
        classification = run_demo("run_classification.py", Path(scratch))
    classification["top1"] = {
        match[1]: float(match[2]) for line in classification["printed"] if (match := TOP1.match(line))
    }
    if set(classification["top1"]) != {"validation", "test"}:
        raise SystemExit(f"run_classification.py printed no validation and test top-1: {classification['printed']}")
    record = {
        "command": f"python examples/record_demo.py --record {args.record}",
        "date": started,
        "machine": {**machine(), "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "pretraining": pretraining,
        "classification": classification,
    }
    with open(args.record, "w") as file:
        json.dump(record, file, indent=2)
        file.write("\n")
    print(json.dumps(classification["top1"]), f"{pretraining['seconds'] + classification['seconds']:.0f} s")


if __name__ == "__main__":
    main()
