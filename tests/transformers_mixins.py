"""Transformers' common test mixins (`ModelTesterMixin`, `ConfigTester`, `BackboneTesterMixin`,
`ImageProcessingTestMixin`) from the tests/ folder of the Transformers sdist of the installed version.

The mixins are used as Transformers publishes them, never copied into this repository. They are looked for in
`$SUPMAE_TRANSFORMERS_TESTS`, else in `.ci/transformers-<version>/tests`, where `.ci/run` unpacks them:

    pip download --no-binary :all: --no-deps transformers==<version> -d /tmp/sdist
    tar xzf /tmp/sdist/transformers-<version>.tar.gz -C .ci transformers-<version>/tests transformers-<version>/PKG-INFO

The sdist's tests/ folder is a package in the Transformers repository but ships without its (empty) `__init__.py`,
which `test_configuration_common.py` needs; it is created if missing. What the sdist's modules import from the rest of
the repository (`tests/utils`, `tests/exporters`, `tests/generation`, `utils/fetch_hub_objects_for_ci.py`) comes from
tests/transformers_shims/, written for this project.
"""

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import transformers


ENV_VARIABLE = "SUPMAE_TRANSFORMERS_TESTS"
DEFAULT_LOCATION = Path(__file__).resolve().parents[1] / ".ci" / f"transformers-{transformers.__version__}" / "tests"
SHIMS = Path(__file__).resolve().parent / "transformers_shims"
# The name the sdist's tests/ folder is imported under (its modules import each other relatively).
PACKAGE = "transformers_common_tests"
MODULES = ("test_configuration_common", "test_modeling_common", "test_backbone_common", "test_image_processing_common")


def transformers_tests_dir() -> Path:
    """Where the sdist's tests/ folder is expected: `$SUPMAE_TRANSFORMERS_TESTS`, else the CI's location."""
    return Path(os.environ[ENV_VARIABLE]) if os.environ.get(ENV_VARIABLE) else DEFAULT_LOCATION


def _sdist_version(tests_dir: Path) -> str | None:
    """The version in the sdist's PKG-INFO next to tests/ (None for a repository checkout, which has none)."""
    info = tests_dir.parent / "PKG-INFO"
    if not info.is_file():
        return None
    for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return None


def unavailable_reason() -> str | None:
    """Why the mixins cannot be used here (a sentence for a skip), or None when they can."""
    tests_dir = transformers_tests_dir()
    fetch = (
        f"unpack the tests/ folder of the transformers=={transformers.__version__} sdist there (.ci/run does; see "
        f"tests/transformers_mixins.py) or point ${ENV_VARIABLE} at one"
    )
    missing = [name for name in MODULES if not (tests_dir / f"{name}.py").is_file()]
    if missing:
        files = ", ".join(f"{name}.py" for name in missing)
        return f"Transformers' common test mixins are not in {tests_dir} ({files} missing): {fetch}."
    version = _sdist_version(tests_dir)
    if version is not None and version != transformers.__version__:
        return (
            f"The common test mixins in {tests_dir} are from transformers {version}, but {transformers.__version__} "
            f"is installed: {fetch}."
        )
    if not (tests_dir / "__init__.py").is_file():
        try:
            (tests_dir / "__init__.py").touch()
        except OSError as error:
            return f"{tests_dir} has no __init__.py (the sdist leaves it out) and it cannot be created: {error}."
    return None


def _import_package(tests_dir: Path) -> None:
    """Import the sdist's tests/ folder as `PACKAGE`, with the stand-ins for the rest of the repository."""
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        PACKAGE, tests_dir / "__init__.py", submodule_search_locations=[str(tests_dir), str(SHIMS)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    # A top-level module in the Transformers repository (utils/), imported by test_image_processing_common.py.
    helper = importlib.util.spec_from_file_location("fetch_hub_objects_for_ci", SHIMS / "fetch_hub_objects_for_ci.py")
    module = importlib.util.module_from_spec(helper)
    helper.loader.exec_module(module)
    sys.modules.setdefault("fetch_hub_objects_for_ci", module)


def common_module(name: str):
    """One of `MODULES`, imported from the sdist (call `unavailable_reason()` first)."""
    _import_package(transformers_tests_dir())
    return importlib.import_module(f"{PACKAGE}.{name}")
