"""supmae.training.arguments: --config_overrides names the closest fields of a mistyped one."""

import pytest
from helpers import tiny_config

from supmae.training.arguments import apply_config_overrides


def test_a_mistyped_config_field_names_the_closest_ones():
    config = tiny_config()
    with pytest.raises(ValueError, match=r"'hiden_size' is not a field of SupMAEConfig\. Did you mean hidden_size"):
        apply_config_overrides(config, "hiden_size=64")
    assert apply_config_overrides(config, "hidden_size=64,mask_ratio=0.5") == ["hidden_size", "mask_ratio"]
    assert (config.hidden_size, config.mask_ratio) == (64, 0.5)
