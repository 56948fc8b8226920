# The two quickstart commands: `make demo` and `make test`.
# Both create (or reuse) .venv and install the project into it first.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format bench install clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Run the main job (apply: denoise + compress with the shipped models) on the embedded
## sample photographs; writes under out/demo and prints where.
demo: $(STAMP)
	$(BIN)/latentpress apply --output out/demo

## Run the whole test suite (tests that need ../shared/datasets skip without it).
test: $(STAMP)
	$(BIN)/python -m pytest -q tests

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
