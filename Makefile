# The two commands a user needs:  `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The demo needs only the core and the NLU extra; the tests need every extra.
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test
SYS_STAMP := $(VENV)/.system-packages

.PHONY: setup demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(SYS_STAMP): deploy/system-packages.txt | $(BIN)/python
	bash scripts/install-system-packages.sh
	touch $(SYS_STAMP)

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[nlu]"
	touch $(DEMO_STAMP)

$(TEST_STAMP): pyproject.toml $(SYS_STAMP) | $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"
	# Silero VAD + Smart Turn ONNX files ship in the pipecat-ai wheel; we need only those two
	# files, not pipecat's ~30 dependencies (see agent/speech/assets.py).
	$(BIN)/pip install -q --no-deps pipecat-ai==1.14.0
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

clean:
	rm -rf $(VENV) .dianxiao
