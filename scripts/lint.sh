#!/usr/bin/env bash
# The project's lint, run by `make test` before the tests: ruff (Python: pyproject.toml), sqlfluff
# (the dbt project: .sqlfluff), and the docs site built in strict mode (mkdocs.yml: a broken link, a
# missing anchor or a page left out of the nav fails). Fix the first two with
# `.venv/bin/ruff format . && .venv/bin/ruff check --fix .` and `.venv/bin/sqlfluff fix dbt_project`.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/sqlfluff lint --quiet --disable-progress-bar dbt_project
# (Not --quiet: it hides the warnings that --strict counts. The variable silences an advert for MkDocs 2.)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict
