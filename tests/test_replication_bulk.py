"""Integration tests of the replication domain's bulk load, on the real PostgreSQL source server
(wal_level=logical) and the lakehouse (pyiceberg SQL catalog in the test's warehouse database)."""

import dagster as dg
import pytest

from dw_platform.samples.replication import seed


@pytest.fixture
def instance():
    return dg.DagsterInstance.ephemeral()


@pytest.fixture
def defs(replication_source, warehouse):
    from dw_platform.definitions import defs

    return defs()


def load_all(defs, instance, run_config=None):
    discovered = defs.resolve_job_def("replication_discover").execute_in_process(instance=instance)
    assert discovered.success
    keys = instance.get_dynamic_partitions("replication_source_app_tables")
    return defs.resolve_job_def("replication_bulk_load_source_app").execute_in_process(
        instance=instance, raise_on_error=False, run_config=run_config or {},
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})


def test_the_sample_source_loads_into_iceberg(replication_source, defs, instance):
    counts = seed(replication_source, customer_count=200, product_count=50, order_count=300, audit_count=100)
    result = load_all(defs, instance)
    assert result.success
    rows = {e.partition: e.materialization.metadata["dagster/row_count"].value for e in result.get_asset_materialization_events()}
    print(rows)
    assert rows == {f"public.{t}": n for t, n in counts.items() if t != "s_staging_import"}
