# The two quickstart commands: `make demo` and `make test`.
# Both create (or reuse) .venv and install the project into it first.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Test processes (pytest-xdist; each runs whole test files, so module fixtures are built once):
# one per core measured 2026-12-05; TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2
# Airflow gets a venv of its own (schedules/requirements.txt): its providers are very large.
AIRFLOW_VENV  ?= schedules/.venv
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

.PHONY: demo test dag-test lint format bench install clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

$(AIRFLOW_STAMP): schedules/requirements.txt
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -r schedules/requirements.txt
	touch $(AIRFLOW_STAMP)

## Run the main job (apply: denoise + compress with the shipped models) on the embedded
## sample photographs; writes under out/demo and prints where.
demo: $(STAMP)
	$(BIN)/latentpress apply --output out/demo --overwrite

## Run the whole test suite (tests that need ../shared/datasets skip without it), then the
## Airflow DAG's tests in Airflow's own venv (built on first use: ~5 min, ~2 GB).
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile tests
	$(MAKE) dag-test

## Only the DAG's tests: it imports with DagBag and its task runs a real archive job.
dag-test: $(STAMP) $(AIRFLOW_STAMP)
	AIRFLOW_HOME=$(CURDIR)/schedules/.airflow-home LATENTPRESS_PYTHON=$(CURDIR)/$(BIN)/python \
		$(AIRFLOW_VENV)/bin/python -m pytest -q -p no:cacheprovider schedules/test_dag.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Throughput benchmarks (see README "Benchmarks").
bench: $(STAMP)
	$(BIN)/python -m benchmarks.prepare_throughput
	$(BIN)/python -m benchmarks.train_throughput
	$(BIN)/python -m benchmarks.codec_speed
	$(BIN)/python -m benchmarks.apply_throughput

clean:
	rm -rf out build *.egg-info
