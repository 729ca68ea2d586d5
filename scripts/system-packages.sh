#!/usr/bin/env bash
# The Debian packages dw_platform needs, installed with apt when missing; shared by the bootstrap
# (`system-packages.sh dev`) and the code-location image (`system-packages.sh runtime`, deploy/Dockerfile).
# runtime: what the code location itself needs (the ODBC driver manager, PostgreSQL's and MariaDB's
#   ODBC drivers).
# dev: that plus the servers the project starts as its own processes (MariaDB, Redis), chromium for
#   the browser test, python3-venv and Node (npm) for the Azurite blob emulator.
set -euo pipefail
profile="${1:-dev}"

packages=()
want() { dpkg -s "$1" >/dev/null 2>&1 || packages+=("$1"); }
want unixodbc
want odbc-postgresql
want odbc-mariadb
if [ "$profile" = dev ]; then
  want mariadb-server
  want redis-server
  python3 -c "import ensurepip" >/dev/null 2>&1 || packages+=(python3-venv)
  command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
  [ -x /usr/bin/chromium ] || packages+=(chromium)
elif [ "$profile" != runtime ]; then
  echo "usage: $0 [dev|runtime]" >&2
  exit 2
fi
if ((${#packages[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "system-packages: installing ${packages[*]} with apt-get"
  $sudo apt-get update -qq
  recommends=(); [ "$profile" = runtime ] && recommends=(--no-install-recommends)
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${recommends[@]}" "${packages[@]}" >/dev/null
fi
