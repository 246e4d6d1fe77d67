# synthloop: the README's commands. `make demo` and `make test` set up what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
RENDER_VENV := .venv-render
PY := $(VENV)/bin/python
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME := $(CURDIR)/.prefect
export MLFLOW_ENABLE_ASYNC_LOGGING := false
export GIT_PYTHON_REFRESH := quiet

.PHONY: setup demo demo-local test test-fast bench lint clean

setup: $(VENV)/.installed $(RENDER_VENV)/.installed

# Main environment: torch 2.14.1 + torchvision 0.29.1 and the MLOps stack, pinned by constraints.txt.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24,<26"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

# Blender environment: bpy 4.5 LTS pins numpy<2, so it gets its own interpreter;
# synthloop starts render workers with it (see src/synthloop/synthesis/).
$(RENDER_VENV)/.installed: constraints-render.txt
	test -x $(RENDER_VENV)/bin/python || $(PYTHON) -m venv $(RENDER_VENV)
	$(RENDER_VENV)/bin/python -m pip install -q -c constraints-render.txt "bpy==4.5.4"
	touch $@

## demo: render, pretrain M0 and run DAL cycles as a Prefect flow (about 20-25 min on 2 cores)
demo: setup
	$(PY) flows/demo.py pipelines/demo.yaml

## demo-local: the same pipeline without Prefect
demo-local: setup
	$(VENV)/bin/synthloop demo --config pipelines/demo.yaml

## test: the whole suite (unit, integration, and the toy-size end-to-end run)
test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not render and not e2e"

clean:
	rm -rf workspace .prefect .pytest_cache
