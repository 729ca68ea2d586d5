"""The SoftCart sync job end to end: MariaDB over ODBC into bronze, then the dbt star schema with
its tests as asset checks."""

from datetime import datetime, timedelta
from decimal import Decimal

import dagster as dg
import pytest
from conftest import assert_column_lineage

from dw_platform.samples.softcart import insert_sales, sales_rows, seed_reference_data

pytestmark = pytest.mark.integration

START = datetime(2025, 11, 20)


def sync(definitions: dg.Definitions) -> dg.ExecuteInProcessResult:
    return definitions.resolve_job_def("softcart_sync").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )


def test_the_sync_builds_the_star_schema_whose_keys_and_revenue_reconcile(definitions, softcart_db, warehouse):
    seed_reference_data(softcart_db, customers=200)
    insert_sales(softcart_db, sales_rows(800, START, START + timedelta(days=80), customers=200, bad_every=20))
    # A customer the shop does not know and a product the reference list has no category for.
    insert_sales(
        softcart_db,
        [
            (101, 9999, 1, Decimal("24.99"), datetime(2026, 1, 5, 10)),
            (118, 1, 2, Decimal("31.00"), datetime(2026, 1, 5, 11)),
        ],
    )

    result = sync(definitions)

    evaluations = result.get_asset_check_evaluations()
    failed = [e.check_name for e in evaluations if not e.passed]
    assert result.success and not failed, failed
    assert_column_lineage(result)
    names = {e.check_name for e in evaluations}
    assert {
        "assert_softcart_revenue_reconciles",
        "assert_softcart_fact_rows_equal_valid_silver_rows",
        "assert_softcart_summary_levels_add_up",
        "relationships_softcart_fact_sales_date_key__date_key__ref_softcart_dim_date_",
        "unique_softcart_dim_category_category_key",
        "softcart_sales_data_no_data_lost",
    } <= names

    # Bad rows are flagged in silver, not dropped; the fact holds exactly the valid ones.
    silver, valid, invalid = warehouse.execute(
        "select count(*), count(*) filter (where is_valid), count(*) filter (where not is_valid)"
        " from silver.softcart_sales"
    ).fetchone()
    assert silver == 802 and invalid == 30  # every 20th row: 40 bad, 10 of them an unknown product (still valid)
    assert warehouse.execute("select count(*) from gold.softcart_fact_sales").fetchone()[0] == valid
    reasons = {
        r[0].split(", ")[0]
        for r in warehouse.execute("select quality_issues from silver.softcart_sales where not is_valid")
    }
    assert reasons == {"quantity missing or not positive", "price missing or not positive", "no timestamp"}

    # 'unknown' members carry key 0; amounts are quantity * price.
    assert warehouse.execute(
        "select c.category, k.country, f.country_key, f.amount from gold.softcart_fact_sales f"
        " join gold.softcart_dim_category c using (category_key) join gold.softcart_dim_country k using (country_key)"
        " where order_id = 801"
    ).fetchone() == ("Electronics", "unknown", 0, Decimal("24.99"))
    assert warehouse.execute(
        "select category_key, amount from gold.softcart_fact_sales where order_id = 802"
    ).fetchone() == (
        0,
        Decimal("62.00"),
    )

    # softcart_dim_date covers whole years, keyed yyyymmdd.
    assert warehouse.execute(
        "select min(date_key), max(date_key), count(*) from gold.softcart_dim_date"
    ).fetchone() == (
        20250101,
        20261231,
        730,
    )
    assert warehouse.execute(
        "select quarter_name, month_name, weekday, weekday_name from gold.softcart_dim_date where date_key = 20260105"
    ).fetchone() == ("Q1", "January", 1, "Monday")

    # The summary's grand total is the fact's revenue.
    fact_revenue = warehouse.execute("select sum(amount) from gold.softcart_fact_sales").fetchone()[0]
    assert (
        warehouse.execute(
            "select revenue from gold.softcart_sales_summary where period_level = 'all' and category = 'all'"
            " and country = 'all'"
        ).fetchone()[0]
        == fact_revenue
    )


def test_surrogate_keys_are_stable_across_rebuilds_and_a_second_sync_adds_only_new_rows(
    definitions, softcart_db, warehouse
):
    seed_reference_data(softcart_db, customers=30)
    insert_sales(softcart_db, sales_rows(60, START, START + timedelta(days=10), customers=30))
    assert sync(definitions).success
    keys = warehouse.execute(
        "select order_id, date_key, category_key, country_key from gold.softcart_fact_sales order by order_id"
    ).fetchall()
    built = warehouse.execute("select max(_built_at) from gold.softcart_fact_sales").fetchone()[0]
    # The warehouse as a release before the star schema's names carried the domain left it: the
    # second sync's dbt build renames the tables first (migration 0007) and goes on incrementally.
    warehouse.execute(
        "alter table gold.softcart_fact_sales rename to fact_sales;"
        " alter table gold.softcart_dim_date rename to dim_date;"
        " alter table gold.softcart_dim_country rename to dim_country;"
        " alter table gold.softcart_dim_category rename to dim_category;"
        " delete from bronze.schema_migrations where name = 'dbt_names_carry_their_domain'"
    )

    insert_sales(
        softcart_db, sales_rows(5, START + timedelta(days=11), START + timedelta(days=12), customers=30, seed=3)
    )
    second = sync(definitions)

    assert second.success
    assert warehouse.execute("select to_regclass('gold.fact_sales'), to_regclass('gold.dim_date')").fetchone() == (
        None,
        None,
    )
    assert warehouse.execute(  # the history stayed: the rows of the first sync were not built again
        "select count(*) from gold.softcart_fact_sales where _built_at <= %s", (built,)
    ).fetchone()[0] == len(keys)
    loaded = next(
        e
        for e in second.get_asset_materialization_events()
        if e.materialization.asset_key.path[-1] == "softcart_sales_data"
    ).materialization.metadata
    assert loaded["dagster/row_count"].value == 5 and loaded["first_rowid"].value == 61
    after = warehouse.execute(
        "select order_id, date_key, category_key, country_key from gold.softcart_fact_sales order by order_id"
    ).fetchall()
    assert after[: len(keys)] == keys
