# Quick start:  make repro   (set up .venv, run the whole DVC pipeline on the built-in data)
#               make test    (set up .venv, run the test suite)
PYTHON ?= python3
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup repro test unit

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

repro: setup
	dvc repro

test: setup
	python -m pytest -v --durations=10

unit: setup
	python -m pytest -q -m "not integration"
