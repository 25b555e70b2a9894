# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/piflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

demo: $(BIN)/piflow
	$(BIN)/piflow demo --target ./lake

lint: $(BIN)/piflow
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: $(BIN)/piflow
	$(BIN)/python benchmarks/emulator.py
	$(BIN)/python benchmarks/connector.py

clean:
	rm -rf $(VENV) lake .bench
