"""The replication domain's asset keys, and its partitions: one dynamic partition per source table
(`schema.table`), per source; the discovery job adds them."""

import dagster as dg


def lakehouse_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["bronze", "lakehouse", source])


def cdc_events_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["bronze", "cdc_events", source])


def table_partitions(source: str) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"replication_{source}_tables")
