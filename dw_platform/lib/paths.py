"""Where the project's files are: the checkout (or the installed package's parent) holding
`dbt_project/`, `workspace.yaml` and the instance configuration. A non-editable install (the
code-location image, deploy/Dockerfile) has no checkout around the package: `DW_PROJECT_ROOT` names
the folder that holds `dbt_project/` there."""

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("DW_PROJECT_ROOT") or Path(__file__).resolve().parents[2])
