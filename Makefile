PYTHON ?= python3

.PHONY: install test test-fast lint format clean demo

install:  ## the package with training and development extras, editable
	$(PYTHON) -m pip install -e ".[dev]"

test:  ## the whole suite, slow end-to-end tests included (what CI runs)
	$(PYTHON) -m pytest -q

test-fast:  ## everything but the tests marked slow
	$(PYTHON) -m pytest -q -m "not slow"

lint:
	$(PYTHON) -m ruff check supmae tests benchmarks examples *.py
	$(PYTHON) -m ruff format --check supmae tests benchmarks examples *.py

format:
	$(PYTHON) -m ruff check --fix supmae tests benchmarks examples *.py
	$(PYTHON) -m ruff format supmae tests benchmarks examples *.py

clean:
	rm -rf build dist *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

demo:  ## pretrain a tiny SupMAE on scikit-learn's digits (no download), then fine-tune it and print test top-1
	$(PYTHON) run_pretraining.py
	$(PYTHON) run_classification.py
