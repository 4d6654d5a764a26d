# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv if missing
# and install omnicrm into it (re-installed when pyproject.toml changes).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.omnicrm-installed

.PHONY: demo test test-spark test-all lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/omnicrm demo configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

# the Spark tests (tests/spark; needs Java, installs the `spark` extra): the feature SQL on local[2]
# against DuckDB, `omnicrm score` with engine: spark against the DuckDB engine on local[2], and the same
# job on a standalone cluster (a master and two workers started with pyspark's spark-class on free local
# ports, stopped at the end); about 11 minutes
test-spark: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	$(BIN)/python -m pytest -m spark tests/spark

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ''

# lint rules and formatting (line length 120, numpydoc docstrings where pyproject.toml says);
# `ruff format src tests benchmarks` fixes a formatting slip
lint: $(STAMP)
	$(BIN)/python -m ruff check src tests benchmarks
	$(BIN)/python -m ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/features.py

clean:
	rm -rf data/world data/world-small data/store data/features .pytest_cache
