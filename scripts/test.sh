#!/usr/bin/env bash
# Install everything the tests need (venv, Python packages, Debian's Chromium) and run them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
. .venv/bin/activate
# --no-compile: no byte-compiling of every installed module up front (torch, gradio, milvus); Python compiles
# what the tests import on first use.
pip install -q --disable-pip-version-check --no-compile -r requirements-dev.txt
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the browser tests will fail" >&2
  else
    echo "warning: chromium not installed (apt-get install chromium); the browser tests will fail" >&2
  fi
fi
# Here what a test needs is there or the test fails, never skips: the store tests' Milvus standalone server (the
# `milvus` package, from requirements-dev.txt, on free loopback ports), the shared datasets (../shared/datasets,
# or --datasets / SHOPLENS_DATASETS) and Chromium with Playwright for the browser tests.
export SHOPLENS_REQUIRE_MILVUS="${SHOPLENS_REQUIRE_MILVUS:-1}"
export SHOPLENS_REQUIRE_DATASETS="${SHOPLENS_REQUIRE_DATASETS:-1}"
export SHOPLENS_REQUIRE_BROWSER="${SHOPLENS_REQUIRE_BROWSER:-1}"
# Parallel workers (pytest-xdist, from requirements-dev.txt): one per CPU unless SHOPLENS_TEST_WORKERS says (0: in
# this process). loadgroup keeps the tests on the Milvus server, and those sharing a module's fixture, together
# on one worker (tests/conftest.py; tests/README.md says how to keep a new test safe in parallel).
python -m pytest -n "${SHOPLENS_TEST_WORKERS:-auto}" --dist loadgroup "$@"
