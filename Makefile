# The two commands a user needs:  `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The demo needs only the core and the NLU extra; the tests need every extra.
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test
SYS_STAMP := $(VENV)/.system-packages
TORCH_VERSION := 2.13.0

.PHONY: setup demo test bench lock clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(SYS_STAMP): deploy/system-packages.txt | $(BIN)/python
	bash scripts/install-system-packages.sh
	touch $(SYS_STAMP)

# Dependencies come from the lock files (exact versions, hashes checked), then the project
# itself without resolving anything again. `make lock` re-resolves them (the upgrade command).
PIP_LOCKED := $(BIN)/pip install -q --require-hashes --no-deps

$(DEMO_STAMP): pyproject.toml requirements/nlu.lock | $(BIN)/python
	$(PIP_LOCKED) -r requirements/nlu.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(DEMO_STAMP)

$(TEST_STAMP): pyproject.toml requirements/test.lock requirements/pipecat-models.lock $(SYS_STAMP) | $(BIN)/python
	# Silero VAD + Smart Turn ONNX files ship in the pipecat-ai wheel; we need only those two
	# files, not pipecat's ~30 dependencies (see agent/speech/assets.py), hence its own lock.
	$(PIP_LOCKED) -r requirements/test.lock -r requirements/pipecat-models.lock
	# torch stays out of the locks: pip takes a CPU-only wheel where the machine keeps one
	# (its other dependencies are locked above, so this adds torch alone there).
	$(BIN)/pip install -q "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -q --no-deps -e .
	touch $(TEST_STAMP) $(DEMO_STAMP)

## Everything (all extras, Debian packages): what the tests and the audio demo need.
setup: $(TEST_STAMP)

## A full simulated sales call on the embedded bus, printed turn by turn.
demo: $(DEMO_STAMP)
	$(BIN)/dianxiao demo

## Set up and run the whole test suite (what CI runs).
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

## Benchmarks: machine-readable lines on stdout (figures in README.md and docs/).
bench: $(TEST_STAMP)
	$(BIN)/python bench/bench_bus.py
	$(BIN)/python bench/bench_nlu.py
	$(BIN)/python bench/bench_dialogue.py

## Re-resolve every lock file in requirements/ from pyproject.toml (the upgrade command).
lock:
	bash scripts/lock.sh

clean:
	rm -rf $(VENV) .dianxiao
