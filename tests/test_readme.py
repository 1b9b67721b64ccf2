"""The README's and the guides' code blocks run as written: every ```python and ```bash block, document after
document (README.md first, then DOCUMENTS' order), in one scratch folder (so a block can use what an earlier one
wrote), with the demos cut to a few steps (SUPMAE_QUICK). A block that needs the reader's data, a GPU or the network
says so in a `<!-- readme-test: skip: REASON -->` line above it; `pip install` commands are checked to name real
extras, not run (the package is installed already).

The blocks run in the environment the test runs in: `python` and `python3` in them are this interpreter as it was
started (a virtual environment's bin/python), never the file that path links to, which would leave the environment."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
# Each document's blocks may use what the documents before it wrote (the README's `make demo` writes outputs/).
DOCUMENTS = (
    "README.md",
    "docs/PRETRAINING.md",
    "docs/CLASSIFICATION.md",
    "docs/ROBUSTNESS_AND_TRANSFER.md",
    "docs/SEGMENTATION.md",
    "docs/CONVERSION.md",
    "docs/RELIABILITY.md",
    "docs/PERFORMANCE.md",
    "docs/CORRECTNESS.md",
    "docs/ARCHITECTURE.md",
    "docs/DEPLOY.md",
    "examples/README.md",
)
BLOCK = re.compile(
    r"(?:<!-- readme-test: (?P<marker>[^>]*?) -->\s*\n)?^```(?P<language>python|bash)\n(?P<code>.*?)^```", re.S | re.M
)
PIP_INSTALL = re.compile(r"(?:python3? -m )?pip install (?P<what>[^&#\n]*?)\s*(?:#[^\n]*)?(?:&&\s*|$)", re.M)


def readme_blocks(text: str, name: str = "README.md") -> list[dict]:
    """A document's python and bash blocks in order: {"language", "code", "skip" (a reason or None), "line"}."""
    blocks = []
    for match in BLOCK.finditer(text):
        marker = match["marker"] or ""
        line = text[: match.start()].count("\n") + 1
        if marker and not marker.startswith("skip: "):
            raise ValueError(f"{name} line {line}: unknown marker {marker!r}")
        blocks.append(
            {
                "language": match["language"],
                "code": match["code"],
                "skip": marker.removeprefix("skip: ") or None,
                "line": line,
            }
        )
    return blocks


def without_installs(code: str) -> str:
    """`code` with its `pip install` commands removed, after checking that they install this checkout or its
    extras (the test environment has them)."""
    for match in PIP_INSTALL.finditer(code):
        what = match["what"].strip()
        assert re.fullmatch(
            r'-e "?\.(\[(train|dev|corrupt|deploy)\])?"?|-e \.|torch==\S+ torchvision==\S+( --index-url \S+)?', what
        ), what
    return PIP_INSTALL.sub("", code)


def interpreter_shims(folder: Path) -> Path:
    """`python` and `python3` scripts in `folder` that run this interpreter by the path it was started with.

    A symlink to `sys.executable` would not do: a virtual environment is found from the path its interpreter is
    started by (pyvenv.cfg next to it or one folder up), so a link elsewhere that resolves to the venv's python runs
    the base interpreter, without the venv's packages ("No module named 'torch'" on a machine whose base python
    lacks them)."""
    folder.mkdir()
    for name in ("python", "python3"):
        shim = folder / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def test_every_document_is_read_and_skips_give_a_reason():
    for name in DOCUMENTS:
        blocks = readme_blocks((ROOT / name).read_text(), name)
        assert all(block["skip"] is None or len(block["skip"]) > 10 for block in blocks), name
    readme = readme_blocks((ROOT / "README.md").read_text())
    assert len(readme) >= 6
    assert sum(block["skip"] is None for block in readme) >= 4
    assert set(DOCUMENTS) >= {"README.md", *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))}


def test_the_shims_run_this_interpreter_with_its_packages(tmp_path):
    """The blocks' `python3` sees the same environment as the test: same prefix (a venv's, when the test runs in
    one), and the packages installed there."""
    shims = interpreter_shims(tmp_path / "bin")
    code = "import sys, torch; print(sys.prefix)"
    env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["python3", "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == sys.prefix


@pytest.mark.slow
def test_documented_code_blocks_run(tmp_path):
    workdir = tmp_path / "reader"
    workdir.mkdir()
    scripts = ("run_pretraining.py", "run_classification.py", "run_segmentation.py", "run_transfer.py")
    for name in ("Makefile", *scripts, "examples", "benchmarks", "suites"):
        (workdir / name).symlink_to(ROOT / name)
    shims = interpreter_shims(tmp_path / "bin")
    env = {
        **os.environ,
        "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "SUPMAE_QUICK": "3",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "2",
    }
    ran = {}
    for name in DOCUMENTS:
        for block in readme_blocks((ROOT / name).read_text(), name):
            if block["skip"]:
                continue
            if block["language"] == "python":
                command = [sys.executable, "-c", block["code"]]
            else:
                command = ["bash", "-euo", "pipefail", "-c", without_installs(block["code"])]
            result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, (
                f"{name}: the block at line {block['line']} failed:\n{block['code']}\n"
                + (result.stdout + result.stderr)[-3000:]
            )
            ran[name] = ran.get(name, 0) + 1
    assert ran.get("README.md", 0) >= 4, ran
