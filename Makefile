# Set-up is part of every target: a missing .venv is created and the project installed into it.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hyrax-installed
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test test-fast lint format bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, from the pinned CPU build, so that nothing later pulls a CUDA build.
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	@echo "== A training run (results in runs/, tracked in ./mlflow.db)"
	$(VENV)/bin/hyrax-run train.epochs=5
	@echo "== A small Optuna search (results in multiruns/: optimization_results.yaml, plots/, optuna.journal)"
	$(VENV)/bin/hyrax-run -m sweep=demo
	@echo "== Done. Browse the runs with: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db"

# Two workers, a test file each at a time: most tests wait on subprocesses and SQLite, not the CPU.
# `test` runs everything (what CI runs); `test-fast` leaves out the tests marked slow (end-to-end runs).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

# The rules are in pyproject.toml ([tool.ruff]).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf runs multiruns mlflow.db mlartifacts .hyrax .pytest_cache
