"""The bronze loader on a real PostgreSQL: type errors, and two loads of one partition at once."""

import threading
import time
from datetime import datetime, timezone

import dagster as dg
import pytest

from dw_platform.lib import bronze
from dw_platform.lib.bronze import BronzeTable, Column, LoadScope
from dw_platform.lib.warehouse import server_connection

TABLE = BronzeTable(
    "bronze",
    "orders",
    (Column("order_id", "integer"), Column("amount", "integer"), Column("ordered_at", "timestamp")),
    index_columns=("ordered_at",),
)
DAY = datetime(2026, 11, 10, tzinfo=timezone.utc)
SCOPE = LoadScope.time_window(["2026-11-10"], "ordered_at", DAY, DAY.replace(day=11))


def load(conn, batches):
    return bronze.load(conn, TABLE, batches, asset_key="bronze/orders", scope=SCOPE, source="test")


def test_a_value_of_the_wrong_type_fails_naming_row_and_column_and_commits_nothing(warehouse):
    rows = [(1, 10, datetime(2026, 11, 10, 1)), (2, "ten", datetime(2026, 11, 10, 2))]

    with pytest.raises(dg.Failure, match=r"row 2: column amount \(integer\) got str 'ten'") as failure:
        load(warehouse, [rows])

    assert failure.value.allow_retries is False
    assert warehouse.execute("select count(*) from bronze.orders").fetchone()[0] == 0
    assert warehouse.execute("select status from bronze.batch_ledger").fetchall() == [("failed",)]


def test_two_loads_of_one_partition_take_turns_and_the_last_one_wins(warehouse, databases):
    first_batch_sent = threading.Event()
    release_first = threading.Event()

    def slow_first_load():
        yield [(1, 10, datetime(2026, 11, 10, 1))]
        first_batch_sent.set()
        release_first.wait(timeout=30)
        yield [(2, 20, datetime(2026, 11, 10, 2))]

    bronze.ensure_bronze_objects(warehouse, TABLE)
    results = {}

    def run(name, batches):
        try:
            with server_connection(databases["warehouse"]) as conn:
                results[name] = load(conn, batches)
        except Exception as exc:  # surfaced by the assertions below
            results[name] = exc

    first = threading.Thread(target=run, args=("first", slow_first_load()))
    first.start()
    assert first_batch_sent.wait(timeout=30)
    second = threading.Thread(target=run, args=("second", [[(3, 30, datetime(2026, 11, 10, 3))]]))
    second.start()
    time.sleep(1)
    assert "second" not in results  # blocked on the partition's lock while the first load runs
    release_first.set()
    first.join(timeout=30)
    second.join(timeout=30)

    assert not isinstance(results["first"], Exception), results["first"]
    assert not isinstance(results["second"], Exception), results["second"]
    rows = warehouse.execute("select order_id, _bronze_batch_id from bronze.orders").fetchall()
    assert rows == [(3, results["second"].batch_id)]
    assert (results["first"].rows_loaded, results["second"].rows_replaced) == (2, 2)


def test_arrow_batches_load_whole_with_nulls_empty_strings_and_every_supported_type(warehouse):
    from datetime import date

    import pyarrow as pa

    table = BronzeTable(
        "bronze",
        "arrow_batches",
        (Column("note", "text"), Column("line", "bigint"), Column("small", "integer"), Column("day", "date")),
    )
    scope = LoadScope(("all",), bronze.sql.SQL("true"))
    batch = pa.RecordBatch.from_pydict(
        {
            "note": pa.array(["", None, "a\r\nb \u00a0é", '"quoted", \\. \t'], pa.string()),
            "line": pa.array([1, None, 3, -(2**62)], pa.int64()),
            "small": pa.array([7, 8, None, -9], pa.int32()),
            "day": pa.array([date(2026, 11, 20), None, date(1969, 12, 31), date(2000, 1, 1)], pa.date32()),
        }
    )

    result = bronze.load(
        warehouse, table, [batch, batch.slice(1, 2)], asset_key="bronze/arrow_batches", scope=scope, source="test"
    )

    assert result.rows_loaded == 6
    rows = warehouse.execute("select note, line, small, day, _bronze_source_file from bronze.arrow_batches").fetchall()
    expected = [tuple(r.values()) + ("test",) for r in [*batch.to_pylist(), *batch.slice(1, 2).to_pylist()]]
    assert rows == expected


@pytest.mark.parametrize("with_text", [False, True])
def test_arrow_decimals_and_timestamps_load_exactly_with_nulls_and_slices(warehouse, with_text):
    """Both encodings: records of one layout (no text column) and Arrow-joined fields (text)."""
    from datetime import timedelta
    from decimal import Decimal

    import pyarrow as pa

    columns = (
        Column("id", "bigint"),
        Column("price", "numeric"),
        Column("rate", "numeric"),
        Column("whole", "numeric"),
        Column("seen", "timestamp"),
        Column("at", "timestamptz"),
    )
    table = BronzeTable(
        "bronze",
        f"arrow_numbers_{int(with_text)}",
        columns + ((Column("note", "text"),) if with_text else ()),
        append_key="id",
    )
    batch = pa.RecordBatch.from_pydict(
        {
            "id": pa.array([1, 2, 3, 4, 5], pa.int64()),
            "price": pa.array(
                [Decimal("-12345678.99"), Decimal("0.00"), None, Decimal("0.01"), Decimal("99999999.99")],
                pa.decimal128(10, 2),
            ),
            "rate": pa.array(
                [Decimal("99999999999999.9999"), Decimal("-0.0001"), Decimal("1.5"), None, Decimal("0")],
                pa.decimal128(18, 4),
            ),
            "whole": pa.array([Decimal(-99999), Decimal(10000), Decimal(7), Decimal(0), None], pa.decimal128(5, 0)),
            "seen": pa.array(
                [
                    datetime(1999, 12, 31, 23, 59, 59, 999999),
                    None,
                    datetime(1970, 1, 1, 0, 0, 0, 1),
                    datetime(2000, 1, 1),
                    datetime(1900, 3, 1, 12),
                ],
                pa.timestamp("us"),
            ),
            "at": pa.array(
                [DAY, DAY + timedelta(microseconds=5), None, DAY - timedelta(days=40000), DAY],
                pa.timestamp("us", "UTC"),
            ),
            **({"note": pa.array(["a", None, "", "é", "z"])} if with_text else {}),
        }
    )
    scope = LoadScope(("all",), bronze.sql.SQL("true"))

    result = bronze.load(
        warehouse,
        table,
        [batch.slice(0, 2), batch.slice(2)],
        asset_key="bronze/arrow_numbers",
        scope=scope,
        source="test",
    )

    assert result.rows_loaded == 5
    names = ", ".join(c.name for c in table.columns)
    assert warehouse.execute(f"select {names} from {table.qualified_name} order by id").fetchall() == [
        tuple(r.values()) for r in batch.to_pylist()
    ]


def test_an_append_key_load_of_a_key_bronze_holds_fails_and_commits_nothing(warehouse):
    import pyarrow as pa

    table = BronzeTable("bronze", "appended", (Column("id", "bigint"), Column("note", "text")), append_key="id")
    scope = LoadScope(("all",), bronze.sql.SQL("true"))

    def load_ids(ids):
        batch = pa.RecordBatch.from_pydict({"id": pa.array(ids, pa.int64()), "note": pa.array(["x"] * len(ids))})
        return bronze.load(warehouse, table, [batch], asset_key="bronze/appended", scope=scope, source="test")

    assert (load_ids([1, 2, 3]).rows_loaded, load_ids([]).rows_loaded, load_ids([4, 5]).rows_loaded) == (3, 0, 2)
    with pytest.raises(dg.Failure, match="duplicate key value"):
        load_ids([6, 3])
    assert [r[0] for r in warehouse.execute("select id from bronze.appended order by id")] == [1, 2, 3, 4, 5]
    assert warehouse.execute(
        "select rows_loaded, first_id, last_id, status from bronze.batch_ledger order by started_at"
    ).fetchall() == [
        (3, 1, 3, "succeeded"),
        (0, None, None, "succeeded"),
        (2, 4, 5, "succeeded"),
        (0, None, None, "failed"),
    ]
