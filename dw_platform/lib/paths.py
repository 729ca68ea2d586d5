"""Where the project's files are: the checkout (or the installed package's parent) holding
`dbt_project/`, `workspace.yaml` and the instance configuration."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
