#!/usr/bin/env bash
# Installs what dw_platform needs on a fresh Debian/Ubuntu machine, and nothing twice:
# the ODBC driver manager, PostgreSQL's and MariaDB's ODBC drivers, the MariaDB and Redis servers
# (apt, scripts/system-packages.sh; the project starts its own processes, no system service),
# chromium for the browser test, a virtualenv with the package, and the Node tools of
# package.json (the Azurite blob emulator) with npm.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/system-packages.sh dev

[ -x .venv/bin/python ] || python3 -m venv .venv
# requirements.lock pins every package to the versions the tests passed with (`make lock` renews it).
stamp=".venv/.installed-$(cat pyproject.toml requirements.lock | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python packages into .venv"
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -c requirements.lock -e ".[dev,bench]"
  touch "$stamp"
fi

npm_stamp="node_modules/.installed-$(cat package.json package-lock.json | sha1sum | cut -c1-12)"
if [ ! -f "$npm_stamp" ]; then
  echo "bootstrap: installing Node tools (Azurite) into node_modules"
  npm install --no-audit --no-fund --loglevel=error
  touch "$npm_stamp"
fi
