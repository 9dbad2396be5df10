# medseg: `make demo` shows the whole system on synthetic data; `make test` runs the suite.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: install niivue demo test test-slow clean

install: $(STAMP)

# torch==2.13.0 goes first and alone: on these machines that spec resolves to a local CPU
# wheel, and every later install sees it satisfied instead of pulling CUDA packages.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet torch==2.13.0 -e '.[test,serve]'
	$(MAKE) niivue
	touch $(STAMP)

# niivue (the viewer of `medseg serve`) from the npm registry at a pinned version, into the venv:
# not copied into the repository. Without npm, the server's API works and its page says how to install it.
NIIVUE_VERSION := 0.69.0
niivue:
	command -v npm >/dev/null && npm install --no-save --no-audit --no-fund --prefix $(VENV)/niivue \
	    @niivue/niivue@$(NIIVUE_VERSION) >/dev/null \
	    || echo "warning: niivue not installed (npm missing or failed); medseg serve's page will say how"

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
