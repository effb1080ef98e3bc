#!/usr/bin/env bash
# Creates .venv and installs the package with its test extra, once per change of the package metadata.
# TORCH_SPEC picks the torch build: the default is the CPU wheel these machines provide locally.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
stamp=".venv/.installed-$(cat setup.cfg pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "Setting up .venv (first run only) ..."
  # pip's notes that a configured local index folder is absent say nothing about this project: dropped.
  quiet_pip() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2> >(
    grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory.$" >&2); }
  quiet_pip "$TORCH_SPEC"
  quiet_pip -e ".[test]"
  touch "$stamp"
fi
