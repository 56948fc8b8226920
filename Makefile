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

## Run the main job on the embedded sample photographs (writes under out/demo).
demo: $(STAMP)
	$(BIN)/latentpress prepare --output out/demo/prepared --noise gaussian:0-55 --seed 0 \
		--eval-fraction 0.3 --overwrite

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

clean:
	rm -rf out build *.egg-info
