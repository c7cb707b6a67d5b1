# Every target creates or reuses .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# EXTRAS=test,ucx also installs ucxx, so the ucx:// tests run instead of skipping (CI does)
EXTRAS ?= test
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test lint venv clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

venv: $(STAMP)

$(DEMO_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[demo]'
	touch $(DEMO_STAMP)

## demo: a LocalCluster sized to this machine estimates pi with thousands of tasks
demo: $(DEMO_STAMP)
	$(PY) -m trioclust.demo

## test: the whole suite
test: $(STAMP)
	$(PY) -m pytest -q

## lint: ruff, and mypy --strict on the package
lint: $(STAMP)
	$(VENV)/bin/ruff check trioclust tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(BENCH_VENV) build *.egg-info

# The benchmarks run in a venv of their own, with dask.distributed to compare against.
BENCH_VENV := .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed-bench
DASK_VERSION := 2026.8.0
WORKERS ?= 2

$(BENCH_VENV)/bin/python:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip

$(BENCH_STAMP): pyproject.toml | $(BENCH_VENV)/bin/python
	$(BENCH_PY) -m pip install -q -e '.[ucx]' 'dask[array,dataframe,distributed]==$(DASK_VERSION)' numpy
	touch $(BENCH_STAMP)

## bench: every scenario, trioclust against dask, WORKERS worker processes (default 2)
bench: $(BENCH_STAMP)
	$(BENCH_PY) benchmarks/run.py --workers $(WORKERS)

## bench-quick: the same with small sizes, in about 2 minutes
bench-quick: $(BENCH_STAMP)
	$(BENCH_PY) benchmarks/run.py --quick --workers $(WORKERS)
