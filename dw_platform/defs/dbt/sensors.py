"""The automation sensor: evaluates every asset's automation condition (the dbt models follow
their upstream) and launches the runs they ask for. Running by default, so `make dev` builds
silver and gold after a bronze partition is materialized from the UI."""

import dagster as dg

automation = dg.AutomationConditionSensorDefinition(
    "automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description=(
        "Rebuilds silver and gold after what they read changed: a bronze partition materialized from the UI or a "
        "backfill leads to that silver partition and the gold tables on it. Runs launched by it carry the tag "
        "dagster/sensor_name=automation. Stop it to build silver and gold only through the domain jobs."
    ),
)
