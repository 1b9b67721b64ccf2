"""pytest's set-up of the suite: nothing reaches a hub, `import helpers` works from every folder, shared fixtures.
(What the tests share besides fixtures is in helpers.py.)"""

import os
import sys

import pytest
import torch


# Stand-ins imported by Transformers' common test mixins (tests/transformers_mixins.py), not tests of their own.
collect_ignore = ["transformers_shims"]

# Nothing in the test suite may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# tests/ on the path, for `import helpers` and `from reference import reference_supmae` in every folder.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def images():
    """Four 32x32 RGB images and masking noise for them."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 32, 32, generator=generator), torch.rand(4, 16, generator=generator)
