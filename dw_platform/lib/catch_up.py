"""Schedules that catch up: each tick launches one run for every partition still to build.

A tick asks the Dagster instance for the status of each partition of the job's partitioned
assets (`DagsterInstance.get_status_by_partition`) up to the tick's time, and requests ONE run
over the range from the first partition that is missing or failed to the last: a single-run
backfill (the range's tags, as the UI's "single run" backfill sets them). Partitions in that range
that are already built are run again with it, which the loads make harmless (a day replaces or
appends to itself). When every partition is there, or the ones that are not have a run in
progress, the tick skips with the reason. After the platform was down for days the daemon
evaluates only the latest missed tick of a schedule (Dagster does not replay ticks of a schedule
without a partition set), and that tick finds every day missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import dagster as dg

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
CATCH_UP_TAG = "dw/catch_up_partitions"


def partitions_to_build(
    instance: dg.DagsterInstance,
    partitions_def: dg.PartitionsDefinition,
    assets: Sequence[dg.AssetKey],
    now: datetime,
) -> list[str]:
    """The partitions (up to `now`, in order) where any of `assets` is missing or failed and
    none is being built."""
    keys = partitions_def.get_partition_keys(current_time=now, dynamic_partitions_store=instance)
    statuses = [instance.get_status_by_partition(asset, keys, partitions_def) or {} for asset in assets]
    return [
        key
        for key in keys
        if any(s.get(key) in (None, dg.AssetPartitionStatus.FAILED) for s in statuses)
        and not any(s.get(key) == dg.AssetPartitionStatus.IN_PROGRESS for s in statuses)
    ]


def catch_up_request(
    instance: dg.DagsterInstance,
    partitions_def: dg.PartitionsDefinition,
    assets: Sequence[dg.AssetKey],
    now: datetime,
) -> dg.RunRequest | dg.SkipReason:
    """One run over the partitions to build, or the reason there is none."""
    keys = partitions_to_build(instance, partitions_def, assets, now)
    if not keys:
        return dg.SkipReason(f"every partition up to {now:%Y-%m-%d %H:%M} UTC is built or being built")
    first, last = keys[0], keys[-1]
    return dg.RunRequest(
        run_key=f"{first}...{last}",
        tags={
            RANGE_START_TAG: first,
            RANGE_END_TAG: last,
            CATCH_UP_TAG: ", ".join(keys) if len(keys) <= 20 else f"{len(keys)}: {', '.join(keys[:20])}, ...",
        },
    )


def catch_up_schedule(
    job: dg.UnresolvedAssetJobDefinition,
    assets: Sequence[dg.AssetKey],
    *,
    name: str,
    cron_schedule: str,
    description: str,
) -> dg.ScheduleDefinition:
    """A schedule of `job` (partitioned) whose every tick requests one run for the partitions of
    `assets` still missing or failed (see the module docstring). Starts stopped."""

    @dg.schedule(
        name=name,
        job=job,
        cron_schedule=cron_schedule,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=description,
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        return catch_up_request(context.instance, job.partitions_def, assets, context.scheduled_execution_time)

    return _schedule
