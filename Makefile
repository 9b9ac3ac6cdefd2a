# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/deeplense demo --out demo_output

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks analysis
	$(BIN)/ruff format --check src tests benchmarks analysis
	$(BIN)/lint-imports --no-cache  # layers import only downward (contracts in pyproject.toml)
	$(BIN)/mypy  # types of the core, data, models, tasks and inference layers

test: $(STAMP) lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/sim_throughput.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
