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

# A run that ended in one of these did not finish its work: a sensor may request it again, unless
# Dagster's run retries will (the tag below, "true", set on the failed run).
ENDED_UNFINISHED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
WILL_RETRY_TAG = "dagster/will_retry"
