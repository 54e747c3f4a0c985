# Every target bootstraps its own virtualenv, so a fresh clone needs only python3.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The lake backend pins another DuckDB than the embedded one (see [lake] in pyproject.toml
# and docs/lake.md), so its tests run in a virtualenv of their own, which alone also gets
# [lake-test] (moto, the S3 server of the s3:// tests).
LAKE_VENV := .venv-lake
LAKE_PY := $(LAKE_VENV)/bin/python
LAKE_STAMP := $(LAKE_VENV)/.installed-stamp

.PHONY: test test-full test-lake demo proto dashboard lint gpu-check rca-eval bench bench-lake clean \
	browser postgres vendor screenshots stages-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[collector,demo,dev,proxy]'
	touch $(STAMP)

$(LAKE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(LAKE_VENV)
	$(LAKE_PY) -m pip install --quiet --upgrade pip
	$(LAKE_PY) -m pip install --quiet -e '.[lake,lake-test,demo,dev,proxy]'
	touch $(LAKE_STAMP)

## the quick suite (what CI runs): lint, then unit + integration + the web page in a real
## browser, long scenarios excluded; then the lake backend's tests in their own virtualenv
test: lint browser
	$(PY) -m pytest -q -m "not slow and not lake"
	$(MAKE) test-lake

## everything, including the long scenario runs
test-full: $(STAMP) browser
	$(PY) -m pytest -q -m "not lake"
	$(MAKE) test-lake

## the lake backend's tests (-m lake) in .venv-lake, against a PostgreSQL the tests start
## themselves (see `make postgres`); elsewhere they skip and say why
test-lake: $(LAKE_STAMP) postgres
	$(LAKE_PY) -m pytest -q -m lake

## the lake's tests start a PostgreSQL of their own (initdb, a free port on 127.0.0.1) from
## Debian's package: install it when it is missing, as `browser` installs chromium. As root
## (CI) a failed install fails the build; elsewhere it says what to do and the tests skip.
postgres:
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
			&& [ -z "$$PYROMETER_PG_BIN" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; \
		else \
			echo "PostgreSQL is not installed: run 'sudo apt-get install postgresql' (or set PYROMETER_PG_BIN to its bin folder) to run the lake's tests; they skip without it"; \
		fi; \
	fi

## the browser tests (tests/browser) drive Debian's chromium through Playwright, whose own
## browser download is not reachable from CI: install it when it is missing. As root (CI)
## a failed install fails the build; elsewhere it says what to do and the tests skip.
browser:
	@if ! command -v chromium >/dev/null 2>&1 && [ -z "$$PYROMETER_CHROMIUM" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
		else \
			echo "chromium is not installed: run 'sudo apt-get install chromium' (or set PYROMETER_CHROMIUM) to run the browser tests; they skip without it"; \
		fi; \
	fi

## refresh the web page's vendored libraries (uPlot, speedscope) from the npm registry, as
## pinned in collector/ui/static/vendor/vendor.lock.json (integrity checked); no node needed
vendor: $(STAMP)
	$(PY) -m pyrometer.collector.ui.vendor

## the README's screenshots of the web page, taken by its browser tests
screenshots: $(STAMP) browser
	PYROMETER_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/browser

## run the demo: collector, demo model server, agent sidecar and load for about a minute
demo: $(STAMP)
	$(VENV)/bin/pyrometer demo

## regenerate proto/*_pb2*.py from proto/*.proto with the pinned grpcio-tools
proto: $(STAMP)
	$(PY) -m pyrometer.proto.codegen

## rebuild deploy/grafana/dashboards/pyrometer.json from deploy/grafana/dashboard.py
dashboard: $(STAMP)
	$(PY) deploy/grafana/dashboard.py

## the root-cause evaluation: every scenario 3 times from the in-sample seed and 3 times
## from the held-out seeds, with noise and decoys, the null runs a 12-minute soak each
## (about five hours on two cores); writes tests/scenarios/results.md
## (linked from the README) and results.json beside it. The held-out seeds are never tuned
## on: read their table to judge the scorers, not to change them. Stopped, or run in
## sittings: RESUME=tests/scenarios/results.json keeps the runs it holds and runs the rest.
rca-eval: $(STAMP)
	$(PY) tests/scenarios/run.py --runs 3 --seeds both $(if $(RESUME),--resume $(RESUME))

## the benchmarks side by side with py-spy and Pyroscope's SDK (about half an hour on two
## cores; run it on an otherwise idle machine): writes BENCHMARKS.md and BENCHMARKS.json
bench: $(STAMP)
	$(PY) tests/bench/run.py --size full

## the lake backend's benchmarks (docs/lake.md), in .venv-lake against a PostgreSQL they
## start themselves: ingest with 1, 2 and 3 collectors on one lake, a 10-minute flame graph
## over it, and its Parquet files before and after a maintenance pass (about six minutes on
## two cores). Writes BENCHMARKS-lake.md and BENCHMARKS-lake.json; `make bench`'s files,
## from the other virtualenv, are left as they are.
bench-lake: $(LAKE_STAMP) postgres
	$(LAKE_PY) tests/bench/run.py --lake --size full

## the stage shares of the demo server and of a tokenizers + onnxruntime server against the
## servers' own hand timing (tests/integration/test_stages_check.py, also in `make test`):
## prints the tables, as recorded in docs/stages-check.md (about 20 s). Where torch and
## transformers are installed in .venv (not by this project: PyPI's torch is a CUDA build
## of several GB), the same server on a transformers BertModel too, and with a CUDA GPU,
## on the GPU.
stages-check: $(STAMP)
	$(PY) tests/integration/test_stages_check.py

## on a machine with an NVIDIA GPU: read the real NVML for about 20 s (under load when
## torch with CUDA is importable), print what it read and record it (build/gpu-check.jsonl,
## replayable with --gpu replay:FILE); exits non-zero if it read nothing. Then the agent's
## real NVML path into a collector, end to end (it skips without a GPU).
gpu-check: $(STAMP)
	mkdir -p build
	$(PY) -m pyrometer.agent.gpu.check --record build/gpu-check.jsonl
	$(PY) -m pytest -q -rs tests/integration/test_real_gpu.py

## ruff on everything, mypy --strict on the agent and collector packages, and the import
## contracts between the folders (import-linter, [tool.importlinter] in pyproject.toml).
## mypy and import-linter cannot follow setuptools' package-dir mapping, so they read a
## tree of links that mirrors the installed layout (pyrometer/agent -> agent/, ...).
lint: $(STAMP)
	$(VENV)/bin/ruff check agent collector proto/codegen.py proto/wire.py tests deploy/grafana/dashboard.py
	rm -rf build/typecheck && mkdir -p build/typecheck/pyrometer
	for pkg in agent collector proto; do ln -s "$(CURDIR)/$$pkg" build/typecheck/pyrometer/$$pkg; done
	cd build/typecheck && "$(CURDIR)/$(VENV)/bin/mypy" --config-file "$(CURDIR)/pyproject.toml" \
		-p pyrometer.agent -p pyrometer.collector
	cd build/typecheck && PYTHONPATH=. "$(CURDIR)/$(VENV)/bin/lint-imports" "$(CURDIR)/pyproject.toml"

clean:
	rm -rf $(VENV) $(LAKE_VENV) .pytest_cache build *.egg-info
