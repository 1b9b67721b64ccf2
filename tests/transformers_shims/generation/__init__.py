"""Stand-in for the `tests/generation` package of the Transformers repository, which its sdist does not ship."""
