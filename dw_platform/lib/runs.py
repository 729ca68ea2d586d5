"""What the sensors ask of the runs Dagster holds."""

import dagster as dg

# A run in one of these has not ended: a sensor does not request its work again.
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
