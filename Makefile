PYTHON ?= python

.PHONY: install test test-fast lint format clean

install:  ## the package with training and development extras, editable
	$(PYTHON) -m pip install -e ".[dev]"

test:  ## the whole suite, slow end-to-end tests included (what CI runs)
	$(PYTHON) -m pytest -q

test-fast:  ## everything but the tests marked slow
	$(PYTHON) -m pytest -q -m "not slow"

lint:
	$(PYTHON) -m ruff check supmae tests
	$(PYTHON) -m ruff format --check supmae tests

format:
	$(PYTHON) -m ruff check --fix supmae tests
	$(PYTHON) -m ruff format supmae tests

clean:
	rm -rf build dist *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
