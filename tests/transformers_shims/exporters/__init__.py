"""Stand-in for the `tests/exporters` package of the Transformers repository, which its sdist does not ship."""
