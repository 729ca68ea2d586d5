"""Child process of the fault and automation tests: run one job of the code location on the
instance in DAGSTER_HOME, as a run worker would. Usage: run_job.py <job> <partition key> <tags JSON>
(an empty partition key for a job without partitions, or for the range the tags name)."""

import json
import sys

import dagster as dg

from dw_platform.definitions import defs

if __name__ == "__main__":
    job, partition_key, tags = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    with dg.DagsterInstance.get() as instance:
        result = (
            defs()
            .resolve_job_def(job)
            .execute_in_process(instance=instance, partition_key=partition_key or None, tags=tags, raise_on_error=False)
        )
    sys.exit(0 if result.success else 1)
