# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

# The demo needs piflow alone; the tests also need the dev tools and the Spark/Databricks extras.
$(VENV)/.installed-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed-base
	$(BIN)/python -m pip install -q -e '.[dev,spark,databricks]'
	@touch $@

demo: $(VENV)/.installed-base
	$(BIN)/piflow demo --target ./lake

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/emulator.py
	$(BIN)/python benchmarks/connector.py
	$(BIN)/python benchmarks/af.py
	$(BIN)/python benchmarks/stream.py
	$(BIN)/python benchmarks/spark.py

clean:
	rm -rf $(VENV) lake .bench
