# Every target creates or reuses .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

.PHONY: test lint venv clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## test: the whole suite
test: $(STAMP)
	$(PY) -m pytest -q

## lint: ruff, and mypy --strict on the package
lint: $(STAMP)
	$(VENV)/bin/ruff check trioclust tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info
