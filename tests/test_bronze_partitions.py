"""Bronze tables that grow by time, on a real PostgreSQL: month partitions made on demand, a day's
queries touching its month only (EXPLAIN), history and undated rows, the one-time move of a table
of the earlier shape, and the loader's row hash equal to the one SQL computes."""

import json
import re
from datetime import date, datetime, timedelta, timezone

import dagster as dg
import pyarrow as pa
import pytest
from psycopg import sql

from dw_platform.lib import bronze, bronze_partitions, partition_rows
from dw_platform.lib.bronze import BronzeTable, Column, LoadScope, Watermark
from dw_platform.lib.bronze_checks import no_all_null_rows
from dw_platform.lib.bronze_partitions import RangePartitions
from dw_platform.lib.partition_rows import rows_per_day

COLUMNS = (
    Column("event_id", "integer"),
    Column("note", "text"),
    Column("flag", "boolean"),
    Column("born", "date"),
    Column("at", "timestamp"),
)
EVENTS = BronzeTable("bronze", "events", COLUMNS, version_key=("event_id", "at"), partitions=RangePartitions("at"))
SCHEMA = pa.schema(
    [
        ("event_id", pa.int32()),
        ("note", pa.string()),
        ("flag", pa.bool_()),
        ("born", pa.date32()),
        ("at", pa.timestamp("us")),
    ]
)


def day(d: date, lookback: timedelta = timedelta(0)) -> LoadScope:
    start = datetime.combine(d, datetime.min.time(), timezone.utc)
    return LoadScope.time_window([d.isoformat()], "at", start, start + timedelta(days=1), lookback)


def arrow(rows) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([dict(zip(SCHEMA.names, r)) for r in rows], schema=SCHEMA)


def load(conn, batches, scope, table=EVENTS) -> bronze.LoadResult:
    return bronze.load(
        conn, table, batches, asset_key="bronze/events", scope=scope, source="test", watermark=Watermark("t", "at")
    )


def scanned(conn, query: sql.Composable, params) -> set[str]:
    """The tables a query's plan reads."""
    (plan,) = conn.execute(sql.SQL("explain (format json) ") + query, params).fetchone()

    def walk(node):
        yield from [node["Relation Name"]] if "Relation Name" in node else []
        for child in node.get("Plans", []):
            yield from walk(child)

    return set(walk(plan[0]["Plan"] if isinstance(plan, list) else json.loads(plan)[0]["Plan"]))


def test_month_partitions_are_made_for_the_days_loaded_and_a_days_queries_read_its_month_only(warehouse):
    for d, rows in [
        (date(2026, 10, 31), [(1, "a", True, None, datetime(2026, 10, 31, 9))]),
        (date(2026, 11, 30), [(2, "b", False, None, datetime(2026, 11, 30, 23, 59))]),
        (date(2026, 12, 1), [(3, "c", None, None, datetime(2026, 12, 1, 0, 0, 1))]),
    ]:
        load(warehouse, [arrow(rows)], day(d, lookback=timedelta(hours=24)))

    assert bronze_partitions.bounds(warehouse, "bronze", "events") == [
        (datetime(2026, 10, 1), datetime(2026, 11, 1)),
        (datetime(2026, 11, 1), datetime(2026, 12, 1)),
        (datetime(2026, 12, 1), datetime(2027, 1, 1)),
    ]
    scope = day(date(2026, 12, 1))
    count = sql.SQL("select count(*) from bronze.events where ") + scope.where
    assert scanned(warehouse, count, scope.params) == {"events_p2026_12"}
    null_rows = sql.SQL("select count(*) from bronze.events where num_nonnulls(event_id, note) = 0 and ") + scope.where
    assert scanned(warehouse, null_rows, scope.params) == {"events_p2026_12"}
    assert no_all_null_rows(warehouse, EVENTS, scope).passed
    assert rows_per_day(warehouse, "bronze.events", "at", scope.window_start, scope.window_end) == {
        "2026-12-01": (1, 0)
    }
    # The version index serves a window of the partition column.
    index = sql.SQL("select at from bronze.events where at >= %(window_start)s and at < %(window_end)s order by at")
    warehouse.execute("set enable_seqscan = off")
    plan = "\n".join(r[0] for r in warehouse.execute(sql.SQL("explain ") + index, scope.params).fetchall())
    assert "events_p2026_12_at__bronze_row_hash_idx" in plan and "events_p2026_11" not in plan


def test_a_history_load_keeps_rows_before_the_first_day_and_rows_without_a_time(warehouse):
    first = day(date(2026, 11, 10)).with_history("at")
    rows = [
        (1, "undated", None, None, None),
        (2, "old", None, date(1969, 12, 31), datetime(2019, 3, 4, 5, 6, 7)),
        (3, "first day", None, None, datetime(2026, 11, 10, 10)),
    ]

    assert load(warehouse, [arrow(rows)], first).rows_loaded == 3
    assert load(warehouse, [arrow(rows)], first).rows_loaded == 0  # every version once, the undated too

    placed = warehouse.execute(
        "select tableoid::regclass::text, event_id from bronze.events order by event_id"
    ).fetchall()
    assert placed == [("bronze.events_undated", 1), ("bronze.events_history", 2), ("bronze.events_p2026_11", 3)]
    assert bronze_partitions.bounds(warehouse, "bronze", "events")[0] == (None, datetime(2026, 11, 1))


def test_a_row_outside_the_read_window_fails_its_load_and_commits_nothing(warehouse):
    with pytest.raises(dg.Failure, match='violates check constraint "events_undated_holds_only_rows_without_at"'):
        load(warehouse, [arrow([(1, "late", None, None, datetime(2027, 3, 1))])], day(date(2026, 11, 10)))

    assert warehouse.execute("select count(*) from bronze.events").fetchone()[0] == 0


EDGE_ROWS = [
    (1, "", True, date(2000, 1, 1), datetime(2026, 11, 10, 0, 0, 0, 1)),
    (2, None, None, None, datetime(2026, 11, 10, 1)),
    (
        -2147483648,
        'tab\tline\nquote"\\back, (paren)',
        False,
        date(1969, 12, 31),
        datetime(2026, 11, 10, 23, 59, 59, 999999),
    ),
    (4, "é \u00a0 中文 🙂", True, date(9999, 12, 31), datetime(2026, 11, 10, 12)),
]


def test_the_loader_hashes_arrow_rows_exactly_as_sql_does_so_every_path_agrees(warehouse):
    scope = day(date(2026, 11, 10))

    assert load(warehouse, [arrow(EDGE_ROWS)], scope).rows_loaded == 4

    expr = bronze._row_hash_expr(EVENTS, sql.Identifier("e"))
    differing = sql.SQL("select count(*) from bronze.events e where e._bronze_row_hash <> {}").format(expr)
    assert warehouse.execute(differing).fetchone()[0] == 0
    assert load(warehouse, [EDGE_ROWS], scope).rows_loaded == 0  # Python rows: staged, hashed by SQL
    assert bronze.missing_versions(warehouse, EVENTS, [arrow(EDGE_ROWS)]) == (4, 0)
    changed = [(1, " ", True, date(2000, 1, 1), datetime(2026, 11, 10, 0, 0, 0, 1))]
    assert bronze.missing_versions(warehouse, EVENTS, [changed]) == (1, 1)


def test_a_version_read_twice_in_one_load_is_kept_once_across_chunks(warehouse, monkeypatch):
    monkeypatch.setattr(bronze, "STAGE_ROWS", 2)
    a, b, c = EDGE_ROWS[0], EDGE_ROWS[1], EDGE_ROWS[3]

    result = load(warehouse, [arrow([a, b]), arrow([c, a]), arrow([b]), arrow([])], day(date(2026, 11, 10)))

    assert (result.rows_read, result.rows_loaded) == (5, 3)
    assert warehouse.execute("select count(*) from bronze.events").fetchone()[0] == 3


def test_a_load_over_held_and_unseen_days_adds_exactly_the_versions_bronze_lacks(warehouse, monkeypatch):
    """Only rows within the range bronze holds are probed (`_may_be_held`): a chunk mixing held
    versions, new versions between held ones and versions on days bronze has not seen adds each
    new one once and no held one again, and a day loaded first skips the probe altogether."""
    monkeypatch.setattr(bronze, "STAGE_ROWS", 3)
    at = lambda d, h: datetime(2026, 11, d, h)  # noqa: E731
    held = [(1, "a", True, None, at(10, 1)), (2, "b", True, None, at(10, 5)), (3, "c", True, None, at(10, 9))]
    assert load(warehouse, [arrow(held)], day(date(2026, 11, 10))).rows_loaded == 3
    assert load(warehouse, [arrow(held[::-1])], day(date(2026, 11, 10))).rows_loaded == 0

    between = [(1, "a2", True, None, at(10, 3)), (2, "b", True, None, at(10, 7))]
    unseen = [(4, "d", False, None, at(9, 12)), (5, "e", False, None, at(11, 2)), (1, "a3", True, None, at(11, 4))]
    start = datetime(2026, 11, 9, tzinfo=timezone.utc)
    three_days = LoadScope.time_window(
        ["2026-11-09", "2026-11-10", "2026-11-11"], "at", start, start + timedelta(days=3)
    )
    result = load(warehouse, [arrow([held[0], *between, unseen[0]]), arrow([*unseen[1:], held[2]])], three_days)

    assert (result.rows_read, result.rows_loaded) == (7, 5)
    loaded = [at for (at,) in warehouse.execute("select at from bronze.events order by at")]
    assert loaded == sorted(r[4] for r in [*held, *between, *unseen])
    assert load(warehouse, [arrow([*held, *between, *unseen])], three_days).rows_loaded == 0


def test_a_table_of_the_earlier_shape_moves_into_partitions_once_with_every_row_and_its_lineage(warehouse):
    # bronze.events as the loader created it before partitions: a plain table, its row hash
    # (md5 of the row's text), a unique index on it and an index on the time column.
    warehouse.execute("create schema if not exists bronze")
    warehouse.execute(
        "create table bronze.events (event_id integer, note text, flag boolean, born date, at timestamp,"
        " _bronze_load_ts timestamptz, _bronze_batch_id uuid, _bronze_source_file text, _bronze_row_hash text)"
    )
    warehouse.execute("create unique index events_row_hash_key on bronze.events (_bronze_row_hash)")
    warehouse.execute("create index events_at_idx on bronze.events (at)")
    warehouse.execute(
        """
        insert into bronze.events
        select i, 'old ' || i, i % 2 = 0, null, timestamp '2026-09-01' + i * interval '1 day',
               timestamptz '2026-10-01 00:00+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'old load', null
        from generate_series(1, 60) i
        """
    )
    warehouse.execute(
        "update bronze.events e set _bronze_row_hash = md5(row(e.event_id, e.note, e.flag, e.born, e.at)::text)"
    )

    result = load(warehouse, [arrow([(1, "old 1", False, None, datetime(2026, 9, 2))])], day(date(2026, 9, 2)))

    assert result.rows_loaded == 0  # the version moved with its hash computed again, so it is found
    assert bronze_partitions.is_partitioned(warehouse, "bronze", "events")
    assert warehouse.execute(
        "select count(*), count(distinct tableoid), min(_bronze_source_file), max(_bronze_source_file),"
        " min(_bronze_load_ts) = max(_bronze_load_ts) from bronze.events"
    ).fetchone() == (60, 2, "old load", "old load", True)  # September and October
    migrations = warehouse.execute(
        "select migration, rows_moved, applied_at from bronze.shape_migrations where table_name = 'bronze.events'"
        " order by migration"
    ).fetchall()
    assert [(m, n) for m, n, _ in migrations] == [("range partitions", 60), ("row hash of binary fields", 60)]

    load(warehouse, [arrow([(61, "new", None, None, datetime(2026, 11, 1))])], day(date(2026, 11, 1)))
    assert (
        warehouse.execute(
            "select migration, rows_moved, applied_at from bronze.shape_migrations where table_name = 'bronze.events'"
            " order by migration"
        ).fetchall()
        == migrations
    )  # once
    assert warehouse.execute("select to_regclass('bronze.events_unpartitioned')").fetchone()[0] is None


def _growing_tables():
    """Each bronze table that grows by day or by file, its filling (50,000 rows over 200 days or
    files), and the scope of one day or file as its loads and checks select it."""
    from dw_platform.defs.sales.assets import blob_scope
    from dw_platform.defs.softcart.assets import file_scope
    from dw_platform.defs.video.assets import day_scope
    from dw_platform.sales.ingest import SALES
    from dw_platform.softcart.ingest import SALES_DATA, WEB_ACCESS_LOG
    from dw_platform.video.ingest import SESSIONS, USERS

    by_file = "insert into {t} ({c}, _bronze_source_file) select 'x', 'incoming/2026-11-20/file_' || f from generate_series(1, 200) f, generate_series(1, 250)"
    by_day = "insert into {t} ({c}, arrival_date) select 'x', date '2026-06-01' + f from generate_series(1, 200) f, generate_series(1, 250)"
    by_key = "insert into {t} (rowid, product_id) select g, 1 from generate_series(1, 50000) g"
    rowids = LoadScope(
        ("latest load",),
        sql.SQL("rowid >= %(first_id)s and rowid <= %(last_id)s"),
        {"first_id": 49001, "last_id": 49500},
    )
    return [
        pytest.param(SALES, by_file, blob_scope("2026-11-20/file_7"), id="sales by blob"),
        pytest.param(
            WEB_ACCESS_LOG, by_file, file_scope("incoming/2026-11-20/file_7", "2026-11-20/file_7"), id="web log by file"
        ),
        pytest.param(USERS, by_day, day_scope("2026-11-20"), id="video users by day"),
        pytest.param(SESSIONS, by_day, day_scope("2026-11-20"), id="video sessions by day"),
        pytest.param(SALES_DATA, by_key, rowids, id="softcart sales_data by the latest load's rowids"),
    ]


@pytest.mark.parametrize("table, fill, scope", _growing_tables())
def test_a_day_or_file_of_a_growing_bronze_table_is_replaced_and_checked_through_its_index(
    warehouse, table, fill, scope
):
    bronze.ensure_bronze_objects(warehouse, table)
    text = next(c.name for c in table.columns if c.pg_type == "text") if "{c}" in fill else None
    warehouse.execute(sql.SQL(fill).format(t=table.ident, c=sql.Identifier(text) if text else sql.SQL("")))
    warehouse.execute(sql.SQL("analyze {}").format(table.ident))
    nonnull = sql.SQL(", ").join(sql.Identifier(c) for c in table.source_column_names)
    queries = {
        "a load's replace": sql.SQL("delete from {} where ").format(table.ident) + scope.where,
        "the all-null check": sql.SQL("select count(*) from {} where num_nonnulls({}) = 0 and ").format(
            table.ident, nonnull
        )
        + scope.where,
    }
    for what, query in queries.items():
        plan = "\n".join(r[0] for r in warehouse.execute(sql.SQL("explain ") + query, scope.params).fetchall())
        assert "Seq Scan" not in plan and "Index" in plan, f"{what}:\n{plan}"


def _silver_key(macro_file: str, macro: str, column: str) -> str:
    """The expression a dbt macro of dbt_project/macros wraps around `column`, as dbt renders it."""
    from dw_platform.lib.dbt import DBT_PROJECT

    text = (DBT_PROJECT.project_dir / "macros" / macro_file).read_text()
    body = re.search(r"macro " + macro + r"\(column\) -%\}\s*(.*?)\s*\{%- endmacro", text, re.S).group(1)
    return body.replace("{{ column }}", column)


def _keyed_tables():
    from dw_platform.sales.ingest import SALES
    from dw_platform.video.ingest import SESSIONS, USERS

    return [
        pytest.param(SALES, "order_id", _silver_key("sales_cleaning.sql", "sales_trim", "order_id"), id="sales orders"),
        pytest.param(USERS, "user_id", "btrim(user_id)", id="video users"),
        pytest.param(SESSIONS, "session_id", "btrim(session_id)", id="video sessions"),
    ]


@pytest.mark.parametrize("table, column, key", _keyed_tables())
def test_silver_finds_a_keys_rows_of_every_blob_or_day_through_bronzes_index_on_the_trimmed_key(
    warehouse, table, column, key
):
    """The incremental silver models read the rows of the keys a run touched from all of bronze
    (dbt_project/macros/changed_keys.sql): written as silver writes its key, the lookup must use
    the expression index, else it reads the whole table every run."""
    bronze.ensure_bronze_objects(warehouse, table)
    warehouse.execute(
        sql.SQL("insert into {} ({}) select ' K' || g || ' ' from generate_series(1, 50000) g").format(
            table.ident, sql.Identifier(column)
        )
    )
    warehouse.execute(sql.SQL("analyze {}").format(table.ident))
    query = sql.SQL("explain select * from {} where {} in ('K7', 'K42')").format(table.ident, sql.SQL(key))
    plan = "\n".join(r[0] for r in warehouse.execute(query).fetchall())
    assert "Seq Scan" not in plan and "_key_idx" in plan, plan


def test_silver_finds_a_content_items_latest_day_outside_the_window_through_bronzes_index(warehouse):
    """The catalog is sent whole every day, so every item has a row on every day: silver's
    incremental video_content (dbt_project/macros/video_window.sql, video_latest_day_outside) looks
    up each item's latest day before the window and that day's rows through the index on
    (btrim(content_id), arrival_date), never every day's rows of it."""
    from dw_platform.lib.json_flatten import TableShape
    from dw_platform.video.ingest import ContentFile

    table = ContentFile("test", date(2026, 1, 1), TableShape(), {}).parent_table()
    bronze.ensure_bronze_objects(warehouse, table)
    warehouse.execute(
        sql.SQL(
            "insert into {} (content_id, arrival_date, source_line) select ' C' || i, date '2025-01-01' + d, i"
            " from generate_series(1, 200) i, generate_series(0, 364) d"
        ).format(table.ident)
    )
    warehouse.execute(sql.SQL("analyze {}").format(table.ident))
    queries = {
        "the latest day before the window": "select max(arrival_date) from {} where btrim(content_id) = 'C7'"
        " and arrival_date < ('2025-12-01 00:00:00'::timestamp)::date",
        "that day's rows": "select * from {} where btrim(content_id) = 'C7' and arrival_date = date '2025-11-30'",
    }
    for what, query in queries.items():
        plan = "\n".join(r[0] for r in warehouse.execute(sql.SQL("explain " + query).format(table.ident)).fetchall())
        assert "Seq Scan" not in plan and "content_content_id_key_day_idx" in plan, f"{what}:\n{plan}"


def test_a_large_partitioned_tables_row_count_is_its_partitions_estimate_and_a_new_partition_is_counted(
    warehouse, monkeypatch
):
    """A partitioned parent has no estimate of its own (autovacuum never analyzes it): counting it
    exactly after every day would read the whole history."""
    monkeypatch.setattr(partition_rows, "EXACT_COUNT_LIMIT", 2)
    rows = [(i, "x", True, None, datetime(2026, 10, 1, i)) for i in range(3)]
    load(warehouse, [arrow(rows)], day(date(2026, 10, 1)))
    assert partition_rows.table_rows(warehouse, "bronze.events") == {"dagster/row_count": 3}  # nothing analyzed

    warehouse.execute("analyze bronze.events")  # its partitions: October's estimate is 3
    later = [(9, "y", True, None, datetime(2026, 11, 10, 5))]
    load(warehouse, [arrow(later)], day(date(2026, 11, 10)))  # a new month's partition, not analyzed

    assert partition_rows.table_rows(warehouse, "bronze.events") == {
        "dagster/row_count": 4,
        "row_count_estimated": True,
    }
