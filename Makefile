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

.PHONY: setup demo demo-local demo-proxy test test-fast test-faults bench lint clean labelstudio bench-scaleout

setup: $(VENV)/.installed $(RENDER_VENV)/.installed

# Main environment: torch 2.14.1 + torchvision 0.29.1 and the MLOps stack, pinned by constraints.txt.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24,<26"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,pretrained,export,cad,stack]"
	touch $@

# Blender environment: bpy 4.5 LTS pins numpy<2, so it gets its own interpreter;
# synthloop starts render workers with it (see src/synthloop/synthesis/).
$(RENDER_VENV)/.installed: constraints-render.txt
	test -x $(RENDER_VENV)/bin/python || $(PYTHON) -m venv $(RENDER_VENV)
	$(RENDER_VENV)/bin/python -m pip install -q -c constraints-render.txt "bpy==4.5.4"
	touch $@

# Label Studio (the human oracle's tool, and the real server the slow round-trip test starts):
# its own interpreter, because label-studio 1.23 pins Django/pydantic/etc. that clash with ours.
LABELSTUDIO_VENV := .venv-labelstudio
labelstudio: $(LABELSTUDIO_VENV)/.installed
$(LABELSTUDIO_VENV)/.installed: constraints-labelstudio.txt
	test -x $(LABELSTUDIO_VENV)/bin/python || $(PYTHON) -m venv $(LABELSTUDIO_VENV)
	$(LABELSTUDIO_VENV)/bin/python -m pip install -q --upgrade "pip>=24,<26"
	$(LABELSTUDIO_VENV)/bin/python -m pip install -q -c constraints-labelstudio.txt "label-studio==1.23.2"
	touch $@

# MMDetection backend (detector.backend: mmdet): mmengine 0.10.7 + mmdet 3.3.0 + mmcv 2.1.0 with
# compiled ops into .venv. PyPI has mmcv 2.1.0 only as source: the first run builds it (~15-35 min
# on 2 cores) and caches the wheel under ~/.cache/synthloop/wheels; later runs take seconds.
.PHONY: setup-mmdet
setup-mmdet: $(VENV)/.installed-mmdet
$(VENV)/.installed-mmdet: $(VENV)/.installed scripts/setup_mmdet.sh constraints-mmdet.txt
	scripts/setup_mmdet.sh $(VENV)
	touch $@

## bench-scaleout: render and scoring throughput with 1 vs 2 Dask workers (docs/benchmarks.md)
bench-scaleout: setup
	$(PY) benchmarks/scaleout_bench.py

## demo: the method on REAL photos (pipelines/bolts.yaml): render the fastener CAD, pretrain M0
## (ImageNet EfficientNet-Lite0), 3 DBAL cycles on the 75 real pool photos with the simulated
## oracle, gated on the 15 real validation photos; a Prefect flow (planned for 30 min on 2 cores).
## OVERLAYS="a.yaml b.yaml" merges site overlays over it, e.g. the oblique, printed scene:
## make demo OVERLAYS="pipelines/overlays/bolts_oblique_scene.yaml pipelines/overlays/bolts_printed_clutter.yaml"
OVERLAYS ?=
demo: setup
	$(PY) flows/demo.py pipelines/bolts.yaml $(OVERLAYS)

## demo-local: the same pipeline without Prefect
demo-local: setup
	$(VENV)/bin/synthloop demo --config pipelines/bolts.yaml $(foreach o,$(OVERLAYS),--overlay $(o))

## demo-proxy: the turbine-blade pipeline (renders only: a rendered proxy of real photos)
demo-proxy: setup
	$(PY) flows/demo.py pipelines/demo.yaml

## stack: the production stack as processes on this machine (infra/stack.yaml; PostgreSQL 15
## from the OS): `synthloop stack status | logs | down` afterwards
.PHONY: stack stack-down
stack: $(VENV)/.installed postgres
	$(VENV)/bin/synthloop stack up

stack-down:
	$(VENV)/bin/synthloop stack down

## test: the whole suite (unit, integration, and the toy-size end-to-end run)
# labelstudio: ~1.5 min and ~1 GB once; the Label Studio round-trip test skips without it.
# setup-mmdet: ~14 min once on a fresh machine (the mmcv build; 8 s from the cached wheel), so
# the mmdet tests (~1 min unit + ~4-6 min e2e) run in CI: ~35 min in all, budget 90.
test: setup labelstudio setup-mmdet browser postgres
	$(PY) -m pytest -q

## browser: Debian's headless Chromium for the browser checks (MLflow review pages, screenshots);
## installed with apt-get when missing (root), else say how
.PHONY: browser
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "the browser tests need Chromium: sudo apt-get install chromium" >&2; exit 1; fi; }
	@chromium --version

## postgres: PostgreSQL 15 from Debian's packages for `synthloop stack` and its tests; installed
## with apt-get when missing (root), else say how
.PHONY: postgres
postgres:
	@{ postgres --version; /usr/lib/postgresql/15/bin/postgres --version; } 2>/dev/null | grep -q ' 15\.' || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null; \
	  else echo "synthloop stack needs PostgreSQL 15: sudo apt-get install postgresql-15" >&2; exit 1; fi; }
	@{ postgres --version; /usr/lib/postgresql/15/bin/postgres --version; } 2>/dev/null | grep -m1 ' 15\.'

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not render and not e2e"

## test-faults: kill/outage/bad-input suite; rewrites docs/reliability.md when it all passes
test-faults: setup
	SYNTHLOOP_RELIABILITY_DOC=$(CURDIR)/docs/reliability.md $(PY) -m pytest -q tests/faults

clean:
	rm -rf workspace .prefect .pytest_cache
