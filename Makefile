# The two commands a user needs:  `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= test
STAMP := $(VENV)/.installed-$(EXTRAS)
SYS_STAMP := $(VENV)/.system-packages

.PHONY: setup demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(SYS_STAMP): deploy/system-packages.txt | $(BIN)/python
	bash scripts/install-system-packages.sh
	touch $(SYS_STAMP)

$(STAMP): pyproject.toml $(SYS_STAMP) | $(BIN)/python
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	# Silero VAD + Smart Turn ONNX files ship in the pipecat-ai wheel; we need only those two
	# files, not pipecat's ~30 dependencies (see agent/speech/assets.py).
	$(BIN)/pip install -q --no-deps pipecat-ai==1.14.0
	touch $(STAMP)

setup: $(STAMP)

## A full simulated sales call on the embedded bus, printed turn by turn.
demo: $(STAMP)
	$(BIN)/dianxiao demo

## Set up and run the whole test suite (what CI runs).
test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/bench_bus.py

clean:
	rm -rf $(VENV) .dianxiao
