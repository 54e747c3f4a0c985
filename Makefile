# Every target bootstraps its own virtualenv, so a fresh clone needs only python3.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: test test-full demo proto bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[collector,demo,dev]'
	touch $(STAMP)

## the quick suite (what CI runs): unit + integration, long scenarios excluded
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

## everything, including the long scenario runs
test-full: $(STAMP)
	$(PY) -m pytest -q

## run the demo: collector, demo model server, agent sidecar and load for about a minute
demo: $(STAMP)
	$(VENV)/bin/pyrometer demo

## regenerate proto/*_pb2*.py from proto/*.proto with the pinned grpcio-tools
proto: $(STAMP)
	$(PY) -m pyrometer.proto.codegen

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
