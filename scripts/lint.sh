#!/usr/bin/env bash
# The project's lint, run by `make test` before the tests: ruff (Python: pyproject.toml) and
# sqlfluff (the dbt project: .sqlfluff). Fix with `.venv/bin/ruff format . && .venv/bin/ruff check --fix .`
# and `.venv/bin/sqlfluff fix dbt_project`.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/sqlfluff lint --quiet --disable-progress-bar dbt_project
