"""`GenerationTesterMixin`, which tests/test_modeling_common.py of the Transformers sdist imports. The modeling mixin
only checks that a tester inherits it exactly when its models can `generate()`; SupMAE's models cannot, so the
generation tests themselves (the Transformers repository's tests/generation/test_utils.py) are not needed."""


class GenerationTesterMixin:
    """Marker: the tester's models generate. SupMAE's testers do not inherit it."""
