PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := $(VENV)/.extras

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The optional stacks the tests and benchmarks exercise (training loops; the Spark and Ray engines),
# not needed by `make demo`. Torch is the CPU build, pinned, installed before the extras: a bare
# `torch` requirement pulls a multi-GB CUDA build.
$(EXTRAS): $(STAMP)
	$(BIN)/python -m pip install --quiet 'torch==2.13.0'
	$(BIN)/python -m pip install --quiet -e '.[test,torch,hf,lightning,spark,ray]'
	touch $(EXTRAS)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(EXTRAS)
	$(BIN)/python -m pytest

bench: $(EXTRAS)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) demo-out
