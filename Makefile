# medseg: `make demo` shows the whole system on synthetic data; `make test` runs the suite.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: install demo test test-slow clean

install: $(STAMP)

# torch==2.13.0 goes first and alone: on these machines that spec resolves to a local CPU
# wheel, and every later install sees it satisfied instead of pulling CUDA packages.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet torch==2.13.0 -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/medseg demo --out demo_run

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) demo_run .pytest_cache

# BENCHMARKS.md, regenerated from the latest result of each suite (benchmarks/results/NAME.json).
.PHONY: bench-table
bench-table: install
	$(BIN)/python -m benchmarks table
