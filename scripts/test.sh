#!/usr/bin/env bash
# Install everything the tests need (venv, Python packages, Debian's Chromium) and run them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
. .venv/bin/activate
pip install -q --disable-pip-version-check -r requirements-dev.txt
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; browser tests will skip" >&2
  else
    echo "warning: chromium not installed (apt-get install chromium); browser tests will skip" >&2
  fi
fi
# The store tests start a Milvus standalone server (the `milvus` package, from requirements-dev.txt) on free
# loopback ports; here a server that cannot start fails those tests instead of skipping them.
export SHOPLENS_REQUIRE_MILVUS="${SHOPLENS_REQUIRE_MILVUS:-1}"
python -m pytest "$@"
