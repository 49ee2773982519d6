# Every target does its own set-up: a virtualenv in .venv, installed from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Stages hide TensorFlow's start-up lines themselves (stages/console.py); SEMISUP_VERBOSE=1 shows its logs.
ifeq ($(SEMISUP_VERBOSE),)
export TF_CPP_MIN_LOG_LEVEL ?= 2
endif

.PHONY: setup test test-fast lint demo study bench check-pages clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The suite's files on three workers (a file's tests stay together: they share its fixtures; a third worker
# fills the time the other two wait on their processes: docs/development.md), handed out
# in the order tests/conftest.py gives them (the longest first; xdist would otherwise put the files with
# the most tests first), and the slowest tests named at the end so that the figure stays visible.
test: $(STAMP)
	$(BIN)/ruff check semisup stages drivers tests bench devtools
	$(BIN)/pytest -n 3 --dist loadfile --no-loadscope-reorder --durations=15

# The inner loop: the tests not marked slow, on two workers (a file's tests together).
test-fast: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile -m 'not slow'

lint: $(STAMP)
	$(BIN)/ruff check semisup stages drivers tests bench devtools
	$(BIN)/ruff format --check semisup stages drivers tests bench devtools

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m drivers.demo

study: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m drivers.study $(if $(PROFILE),--profile $(PROFILE)) $(if $(DATA),--data "$(DATA)") $(if $(SLICE),--slice $(SLICE))

# What a person sees, offline: `dvc plots show` and the study page rendered in headless Chromium (Debian's
# chromium), every plot drawn, no network URL. Pages of your own: `semisup check-page PAGE...`.
check-pages: $(STAMP)
	$(BIN)/pytest -q -rs -s tests/test_pages.py tests/test_report_page.py

bench: $(STAMP)
	$(BIN)/python bench/read_shards.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/knn.py
	$(BIN)/python bench/liveness.py
	$(BIN)/python bench/predict.py
	$(BIN)/python bench/startup.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
