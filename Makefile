# Two commands a user needs: `make run` (the CT demo) and `make test` (the whole suite).
# Both build .venv from the repo's files alone on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
# Like an activated venv: `mlflow run --env-manager local` finds the `ctloop` console script.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/uv pip install --quiet --compile-bytecode -e ".[dev]"
	touch $@

run: install
	$(BIN)/ctloop demo

lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/lint-imports

# Two workers: much of the suite waits on subprocesses and servers. One file per worker at
# a time (`loadfile`), so a module's expensive fixtures are built once.
# Bytecode is compiled ahead (at install, and here for src/ and tests/): with
# PYTHONDONTWRITEBYTECODE set, as on some CI machines, every process the suite starts would
# otherwise recompile MLflow from source (~6 s each).
test: lint
	$(BIN)/python -m compileall -q src tests > /dev/null
	$(BIN)/pytest -n 2 --dist loadfile

# The benchmarks also need the bench group (FLAML, LightGBM, statsmodels); `make test` does not.
$(VENV)/.installed-bench: $(VENV)/.installed
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/uv pip install --quiet --compile-bytecode -e ".[dev,bench]"
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) mlflow.db mlartifacts .ctloop
