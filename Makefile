# Quick start:  make repro   (set up .venv, run the whole DVC pipeline on the built-in data)
#               make test    (set up .venv, run the test suite)
#               make ui      (the MLflow tracking server and UI on http://127.0.0.1:5000)
#               make docs    (the documentation site, checked, into site/)
PYTHON ?= python3
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# The documentation site: --strict fails on a broken link, a missing page or an unknown anchor; the
# hook in mkdocs.yml imports ganseg to write the configuration reference. NO_MKDOCS_2_WARNING: no banner.
MKDOCS_BUILD := NO_MKDOCS_2_WARNING=1 mkdocs build --strict

.PHONY: setup repro test unit docs ui

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

repro: setup
	dvc repro

# The documentation is built first, into a temporary folder (the end-to-end tests copy the project). Two
# pytest-xdist workers: the end-to-end tests spend much of their time waiting on process starts.
test: setup
	site=$$(mktemp -d) && $(MKDOCS_BUILD) --site-dir $$site; status=$$?; rm -rf $$site; exit $$status
	python -m pytest -n 2 -v --durations=30 -rs

unit: setup
	python -m pytest -q -m "not integration"

docs: setup
	$(MKDOCS_BUILD) --site-dir site

# The same command as in docs/mlflow.md; telemetry off, like every ganseg command, and no job runner
# (it serves GenAI jobs, which ganseg never submits: seven processes that would idle beside the UI).
ui: setup
	MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
		mlflow server --host 127.0.0.1 --port 5000 --workers 1 \
		--backend-store-uri sqlite:///mlflow.db --artifacts-destination ./mlartifacts
