"""Running a script as a user without the supmae package would: a fresh interpreter in which `import supmae` fails.

The test venv has supmae installed (editable), so hiding PYTHONPATH is not enough: `-I` keeps PYTHONPATH and the
working directory off sys.path, and a finder at the front of `sys.meta_path` refuses `supmae` and its submodules,
however they would be found. Scripts then get what a saved directory ships (`trust_remote_code=True`) and nothing more.
"""

import os
import subprocess
import sys
import textwrap


# Prepended to every script: the finder, and a check that it works.
BLOCK_SUPMAE = textwrap.dedent(
    """
    import importlib.abc
    import sys


    class _NoSupMAE(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "supmae" or name.startswith("supmae."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked for this test)", name=name)
            return None


    sys.meta_path.insert(0, _NoSupMAE())
    try:
        import supmae  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("supmae is importable in the isolated process")
    """
)


def run_without_supmae(script: str, *arguments, cwd, env: dict | None = None, timeout: int = 600):
    """Run `script` (after `BLOCK_SUPMAE`) with `arguments` as sys.argv[1:], in `cwd`, offline; returns the completed
    process. `env` adds to the environment (PYTHONPATH is dropped)."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(HF_HUB_OFFLINE="1", **(env or {}))
    command = [sys.executable, "-I", "-c", BLOCK_SUPMAE + textwrap.dedent(script), *map(str, arguments)]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)
