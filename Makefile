# neurocast: `make demo` runs live decoding of the embedded simulator, `make test` the test suite.
# Both create .venv (Python 3.11) and install what they need.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned in the `train` extra; an explicit first install keeps pip on the CPU wheel
TORCH := torch==2.13.0
# quiet installs; setuptools' note on editable installs (printed on every install, since the
# package maps several folders onto one namespace) carries nothing to act on
PIP := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q

.PHONY: demo test lint bench-quick models clean help

help:
	@echo "make demo    live decoding of the embedded simulator (browser, or printed when headless)"
	@echo "make test    install with dev+train extras and run the whole test suite"
	@echo "make lint    ruff and mypy"
	@echo "make models  rebuild the shipped demo models (trained on the simulator)"
	@echo "make bench-quick  every benchmark in --quick mode"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "neurocast needs Python 3.11, got " + sys.version' 
	@echo "creating $(VENV)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip

# serving extras only: the demo needs no torch
$(VENV)/.serve: pyproject.toml | $(BIN)/python
	@echo "installing neurocast into $(VENV)"
	@$(PIP) -e .
	@touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	@echo "installing neurocast with the train and dev extras into $(VENV) (CPU torch)"
	@$(PIP) $(TORCH)
	@$(PIP) -e '.[train,dev]'
	@touch $@ $(VENV)/.serve

demo: $(VENV)/.serve
	$(BIN)/neurocast demo $(if $(DISPLAY),,--headless) $(DEMO_ARGS)

test: $(VENV)/.dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# mypy checks the package under its import names: pyproject maps several folders onto the
# neurocast namespace, which mypy cannot follow, so a tree of links mirrors the installed layout
MYPY_TREE := build/mypy

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check neurocast streaming models server clients bench tests
	@rm -rf $(MYPY_TREE) && mkdir -p $(MYPY_TREE)/neurocast
	@for f in neurocast/*; do ln -s ../../../$$f $(MYPY_TREE)/neurocast/; done
	@for d in streaming models server clients; do ln -s ../../../$$d $(MYPY_TREE)/neurocast/$$d; done
	MYPYPATH=$(MYPY_TREE) $(BIN)/mypy -p neurocast
	MYPYPATH=$(MYPY_TREE) $(BIN)/mypy bench

models: $(VENV)/.dev
	$(BIN)/neurocast train demo

$(VENV)/.bench: pyproject.toml $(VENV)/.dev
	@echo "installing the bench extra into $(VENV)"
	@$(PIP) -e '.[train,dev,bench]'
	@touch $@

bench-quick: $(VENV)/.bench
	@for f in bench/[!_]*.py; do echo "== $$f"; $(BIN)/python $$f --quick | tail -n 1 || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
