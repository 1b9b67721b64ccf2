"""The README's code blocks run as written: every ```python and ```bash block, in order, in one scratch folder (so a
block can use what an earlier one wrote), with the demos cut to a few steps (SUPMAE_QUICK). A block that needs the
reader's data, a GPU or the network says so in a `<!-- readme-test: skip: REASON -->` line above it; `pip install`
commands are checked to name real extras, not run (the package is installed already)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(
    r"(?:<!-- readme-test: (?P<marker>[^>]*?) -->\s*\n)?^```(?P<language>python|bash)\n(?P<code>.*?)^```", re.S | re.M
)
PIP_INSTALL = re.compile(r"(?:python3? -m )?pip install (?P<what>[^&#\n]*?)\s*(?:#[^\n]*)?(?:&&\s*|$)", re.M)


def readme_blocks(text: str) -> list[dict]:
    """The README's python and bash blocks in order: {"language", "code", "skip" (a reason or None), "line"}."""
    blocks = []
    for match in BLOCK.finditer(text):
        marker = match["marker"] or ""
        if marker and not marker.startswith("skip: "):
            raise ValueError(f"README line {text[: match.start()].count(chr(10)) + 1}: unknown marker {marker!r}")
        blocks.append(
            {
                "language": match["language"],
                "code": match["code"],
                "skip": marker.removeprefix("skip: ") or None,
                "line": text[: match.start()].count("\n") + 1,
            }
        )
    return blocks


def without_installs(code: str) -> str:
    """`code` with its `pip install` commands removed, after checking that they install this checkout or its
    extras (the test environment has them)."""
    for match in PIP_INSTALL.finditer(code):
        what = match["what"].strip()
        assert re.fullmatch(
            r'-e "?\.(\[(train|dev)\])?"?|-e \.|torch==\S+ torchvision==\S+( --index-url \S+)?', what
        ), what
    return PIP_INSTALL.sub("", code)


def test_blocks_are_found_and_skips_give_a_reason():
    blocks = readme_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 10
    assert all(block["skip"] is None or len(block["skip"]) > 10 for block in blocks)
    assert sum(block["skip"] is None for block in blocks) >= 6


@pytest.mark.slow
def test_readme_code_blocks_run(tmp_path):
    workdir = tmp_path / "reader"
    workdir.mkdir()
    scripts = ("run_pretraining.py", "run_classification.py", "run_segmentation.py", "run_transfer.py")
    for name in ("Makefile", *scripts, "examples", "benchmarks"):
        (workdir / name).symlink_to(ROOT / name)
    shims = tmp_path / "bin"  # `python` and `python3` in the blocks are this interpreter
    shims.mkdir()
    for name in ("python", "python3"):
        (shims / name).symlink_to(sys.executable)
    env = {
        **os.environ,
        "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "SUPMAE_QUICK": "3",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "2",
    }
    ran = 0
    for block in readme_blocks((ROOT / "README.md").read_text()):
        if block["skip"]:
            continue
        if block["language"] == "python":
            command = [sys.executable, "-c", block["code"]]
        else:
            command = ["bash", "-euo", "pipefail", "-c", without_installs(block["code"])]
        result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, (
            f"README block at line {block['line']} failed:\n{block['code']}\n"
            + (result.stdout + result.stderr)[-3000:]
        )
        ran += 1
    assert ran >= 6
