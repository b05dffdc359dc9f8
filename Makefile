# campaign-manager: `make run` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements/dev.lock pyproject.toml | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install browser run test test-unit test-integration test-e2e chaos demo bench bench-report lint schemas lock clean

help:
	@echo "make run     install if needed, migrate, start worker + HTTP API on embedded servers"
	@echo "make test    install if needed, run every test on real servers (embedded unless TEST_* are set)"
	@echo "make demo    publish the AAPL example to a running 'make run' and print the events"
	@echo "make bench   throughput and latency benchmark on embedded servers"
	@echo "make bench-report  the last bench's figures as an HTML page (runs the bench if there are none)"
	@echo "make chaos   fault injection at full size: kills, outages, rebalances, poison (~8 min; results table)"
	@echo "make install | lint | schemas | lock | clean"

$(STAMP): requirements/dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP) browser

# Debian's Chromium for the review page's browser tests (Playwright drives it; its own browser downloads are not
# used). Best effort: without root or apt the install goes on, and those tests skip saying what is missing.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "chromium: installing Debian's package for the browser tests"; export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
	    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; } \
	    || echo "chromium: apt-get install failed; the browser tests will skip"; \
	  else echo "chromium: not installed (needs root and apt-get); the browser tests will skip"; fi; }

run: $(STAMP)
	$(BIN)/campaign-manager run

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

test-integration: install
	$(BIN)/python -m pytest -q tests/integration

test-e2e: install
	$(BIN)/python -m pytest -q tests/e2e

# The full fault-injection scenarios (`make test` runs each at a smoke size); prints a table of results and writes
# it to test-artifacts/chaos-results.md.
chaos: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -m chaos tests/chaos

demo: $(STAMP)
	$(BIN)/campaign-manager demo

bench: install
	$(BIN)/python -m campaign_manager.bench

test-artifacts/bench/results.json:
	$(MAKE) bench

bench-report: install test-artifacts/bench/results.json
	$(BIN)/python -m campaign_manager.bench_report

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

schemas: install
	$(BIN)/campaign-manager schemas --directory schemas

# Re-pin every dependency (needs uv: `pip install uv`).
lock:
	uv pip compile pyproject.toml --python-version 3.11 --generate-hashes -o requirements/prod.lock --custom-compile-command "make lock"
	uv pip compile pyproject.toml --extra embedded --extra test --python-version 3.11 --generate-hashes -o requirements/dev.lock --custom-compile-command "make lock"

clean:
	rm -rf $(VENV) .data .pytest_cache build *.egg-info src/*.egg-info
