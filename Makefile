# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint docs bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-cache-dir --upgrade pip
	$(BIN)/python -m pip install --quiet --no-cache-dir -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/deeplense demo --out demo_output

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks analysis
	$(BIN)/ruff format --check src tests benchmarks analysis
	$(BIN)/lint-imports --no-cache  # layers import only downward (contracts in pyproject.toml)
	$(BIN)/mypy  # types of the core, data, models, tasks and inference layers

docs: $(STAMP)  # the site and its API reference, warnings as errors
	$(BIN)/mkdocs build --strict --quiet

test: $(STAMP) lint docs
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/sim_throughput.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache site
