# Quick start:  make repro   (set up .venv, run the whole DVC pipeline on the built-in data)
#               make test    (set up .venv, run the test suite)
#               make ui      (the MLflow tracking server and UI on http://127.0.0.1:5000)
PYTHON ?= python3
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup repro test unit ui

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

repro: setup
	dvc repro

test: setup
	python -m pytest -v --durations=30 -rs

unit: setup
	python -m pytest -q -m "not integration"

# The same command as in the README; telemetry off, like every ganseg command.
ui: setup
	MLFLOW_DISABLE_TELEMETRY=true mlflow server --host 127.0.0.1 --port 5000 --workers 1 \
		--backend-store-uri sqlite:///mlflow.db --artifacts-destination ./mlartifacts
