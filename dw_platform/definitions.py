"""The code location: every asset, check, job, schedule and sensor under dw_platform/defs/."""

import json
import os
from pathlib import Path

import dagster as dg

from dw_platform.lib.asset_docs import with_asset_docs
from dw_platform.lib.dbt import DBT_PROJECT
from dw_platform.lib.executor import executor
from dw_platform.lib.paths import PROJECT_ROOT


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        # By default a run's steps and checks execute one after another in the run's own process:
        # starting a process per step (10-15 s each on a small machine) cost far more than the work.
        # DW_EXECUTOR=celery spreads them over Celery workers (`dw workers`; lib/executor.py).
        dg.Definitions(executor=executor()),
    )
    # Links to the code (to the repository when DW_GIT_URL is set) and the bronze tables' column
    # descriptions, as dbt models have them (dw_platform/lib/asset_docs.py).
    manifest = json.loads(DBT_PROJECT.manifest_path.read_text())
    return with_asset_docs(
        loaded, manifest, PROJECT_ROOT, os.environ.get("DW_GIT_URL"), os.environ.get("DW_GIT_BRANCH", "main")
    )
