"""The code location: every asset, check, job, schedule and sensor under dw_platform/defs/."""

from pathlib import Path

import dagster as dg

from dw_platform.lib.executor import executor


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        # By default a run's steps and checks execute one after another in the run's own process:
        # starting a process per step (10-15 s each on a small machine) cost far more than the work.
        # DW_EXECUTOR=celery spreads them over Celery workers (`dw workers`; lib/executor.py).
        dg.Definitions(executor=executor()),
    )
