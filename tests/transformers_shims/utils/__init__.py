"""Stand-in for the `tests/utils` package of the Transformers repository, which its sdist does not ship."""
