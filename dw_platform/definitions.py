"""The code location: every asset, check, job, schedule and sensor under dw_platform/defs/."""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        # A run's steps and checks execute one after another in the run's own process: starting a
        # process per step (10-15 s each on a small machine) cost far more than the work. Set
        # another executor here (multiprocess, dagster-k8s, dagster-celery) to spread steps out.
        dg.Definitions(executor=dg.in_process_executor),
    )
