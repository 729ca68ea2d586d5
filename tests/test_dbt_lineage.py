"""Column lineage of dbt models (dw_platform/lib/dbt_lineage.py): traced through the compiled SQL,
including PostgreSQL that sqlglot's optimizer rejects; a model it cannot trace keeps its build and
gets one warning naming it. The domain pipeline tests assert lineage on every model they build
(`conftest.assert_column_lineage`)."""

import dagster as dg

from dw_platform.lib.dbt_lineage import trace, with_column_lineage

BRONZE = '"warehouse"."bronze"."orders_raw"'
SILVER = '"warehouse"."silver"."orders"'
UPSTREAM = {
    BRONZE: {"order_id": "integer", "customer": "text", "amount": "numeric", "_bronze_row_hash": "text"},
    SILVER: {"order_id": "integer", "customer": "text", "amount_cents": "bigint", "source_rows": "bigint"},
}
KEYS = {BRONZE: dg.AssetKey(["bronze", "orders_raw"])}

# An incremental model reading itself through `not exists (select from ...)`: valid PostgreSQL (an
# empty select list) on which sqlglot's optimizer fails with `list index out of range`.
INCREMENTAL_SQL = """
with source as (
    select * from "warehouse"."bronze"."orders_raw" as bronze
    where not exists (
        select from "warehouse"."silver"."orders" as seen where seen.order_id = bronze.order_id
    )
)
select order_id, initcap(trim(customer)) as customer, (amount * 100)::bigint as amount_cents,
       count(*) over (partition by order_id) as source_rows
from source
"""


def deps(lineage: dg.TableColumnLineage) -> dict[str, set[tuple[str, str]]]:
    return {
        column: {(d.asset_key.to_user_string(), d.column_name) for d in found}
        for column, found in lineage.deps_by_column.items()
    }


def test_every_column_is_traced_through_stars_ctes_and_an_empty_select_list():
    lineage = trace(INCREMENTAL_SQL, list(UPSTREAM[SILVER]), UPSTREAM, KEYS)

    assert deps(lineage) == {
        "order_id": {("bronze/orders_raw", "order_id")},
        "customer": {("bronze/orders_raw", "customer")},
        "amount_cents": {("bronze/orders_raw", "amount")},
        "source_rows": {("bronze/orders_raw", "order_id")},  # its window's column; the model itself is no upstream
    }


def test_a_model_reading_its_temporary_key_list_is_traced():
    # An incremental model whose pre-hook listed the keys to rebuild in a temporary table
    # (macros/changed_keys.sql), dropped before the lineage is traced.
    sql = INCREMENTAL_SQL.replace(
        "from source", "from source where order_id in (select key from pg_temp.orders_changed_keys)"
    )

    lineage = trace(sql, ["order_id", "customer"], UPSTREAM, KEYS)

    assert deps(lineage) == {
        "order_id": {("bronze/orders_raw", "order_id")},
        "customer": {("bronze/orders_raw", "customer")},
    }


def test_a_model_that_cannot_be_traced_keeps_its_output_and_gets_one_warning_naming_it(warehouse, tmp_path):
    compiled = tmp_path / "compiled" / "dw_platform" / "models" / "broken.sql"
    compiled.parent.mkdir(parents=True)
    compiled.write_text("select order_id from (select")  # not SQL sqlglot (or anyone) can read
    manifest = {
        "nodes": {
            "model.dw_platform.broken": {
                "resource_type": "model",
                "name": "broken",
                "package_name": "dw_platform",
                "original_file_path": "models/broken.sql",
                "relation_name": SILVER,
                "depends_on": {"nodes": []},
            }
        },
        "sources": {},
    }
    output = dg.Output(None, output_name="silver__broken", metadata={"unique_id": "model.dw_platform.broken"})
    warnings = []

    result = with_column_lineage(output, warehouse, manifest, tmp_path, lambda _: None, warnings.append)

    assert result is output and "dagster/column_lineage" not in result.metadata
    assert len(warnings) == 1 and "dbt model broken" in warnings[0] and "\n" not in warnings[0], warnings
