#!/usr/bin/env bash
# Installs what dw_platform needs on a fresh Debian/Ubuntu machine, and nothing twice:
# the ODBC driver manager, PostgreSQL's and MariaDB's ODBC drivers and the MariaDB server (apt; the
# project starts its own MariaDB process, no system service), Redis (the Celery broker when
# DW_EXECUTOR=celery; again a project-owned process), chromium for the browser test (apt), a
# virtualenv with the package, and the Node tools of package.json (the Azurite blob emulator) with npm.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
dpkg -s unixodbc >/dev/null 2>&1 || packages+=(unixodbc)
dpkg -s odbc-postgresql >/dev/null 2>&1 || packages+=(odbc-postgresql)
dpkg -s odbc-mariadb >/dev/null 2>&1 || packages+=(odbc-mariadb)
dpkg -s mariadb-server >/dev/null 2>&1 || packages+=(mariadb-server)
dpkg -s redis-server >/dev/null 2>&1 || packages+=(redis-server)
python3 -c "import ensurepip" >/dev/null 2>&1 || packages+=(python3-venv)
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
[ -x /usr/bin/chromium ] || packages+=(chromium)
if ((${#packages[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "bootstrap: installing ${packages[*]} with apt-get"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

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
