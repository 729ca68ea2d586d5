"""One dynamic partition per source table (`schema.table`), per source; the discovery job adds them."""

import dagster as dg


def table_partitions(source: str) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"replication_{source}_tables")
