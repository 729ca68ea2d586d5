"""Unit tests of the replication domain's pure parts: the sources file, table patterns, type
mapping, schema diffs and evolution plans, and the Oracle extractor's SQL and type mapping.

No Oracle server can run on the build machines: the Oracle extractor is tested here by the SQL it
would send and the types it maps to, never against a live database (README says so)."""

import pytest

from dw_platform.replication import oracle
from dw_platform.replication.extractor import SourceTable
from dw_platform.replication.iceberg import iceberg_schema, plan_evolution
from dw_platform.replication.postgres import int_to_lsn, lsn_to_int, select_statement, tables_from_catalog
from dw_platform.replication.schema_changes import diff, message
from dw_platform.replication.sources import ConfigError, interpolate, load_sources, parse_sources
from dw_platform.replication.typemap import SourceColumn, numeric_precision_scale, postgres_column


def test_references_resolve_from_the_environment_with_defaults_and_a_missing_one_is_named():
    env = {"HOST": "db.example", "EMPTY": ""}
    assert interpolate("postgresql://u@${HOST}:${PORT:5432}/app", env) == "postgresql://u@db.example:5432/app"
    assert interpolate("${EMPTY:fallback}", env) == "fallback"
    with pytest.raises(ConfigError, match="SECRET_URL is not set"):
        interpolate("${SECRET_URL}", env)


def test_the_url_is_resolved_only_when_used_so_definitions_never_hold_the_secret(monkeypatch):
    monkeypatch.delenv("DW_REPLICATION_SOURCE_URL", raising=False)
    source = load_sources()["source_app"]
    assert source.url_template == "${DW_REPLICATION_SOURCE_URL}"
    with pytest.raises(ConfigError, match="DW_REPLICATION_SOURCE_URL"):
        _ = source.url
    monkeypatch.setenv("DW_REPLICATION_SOURCE_URL", "postgresql://u:pw@h/app")
    assert source.url == "postgresql://u:pw@h/app"


def test_settings_are_typed_and_checked():
    doc = {
        "sources": {
            "erp": {
                "url": "x",
                "workers": "${W:8}",
                "retry_delay_s": "0.5",
                "engine": "oracle",
                "long_columns": "exclude",
            }
        }
    }
    erp = parse_sources(doc, env={})["erp"]
    assert (erp.workers, erp.retry_delay_s, erp.engine, erp.slot) == (8, 0.5, "oracle", "dw_erp")
    with pytest.raises(ConfigError, match="publication_mode"):
        parse_sources({"sources": {"a": {"url": "x", "publication_mode": "some"}}}, env={})
    with pytest.raises(ConfigError, match="unknown setting 'slots'"):
        parse_sources({"sources": {"a": {"url": "x", "slots": "s"}}}, env={})
    with pytest.raises(ConfigError, match="workers"):
        parse_sources({"sources": {"a": {"url": "x", "workers": "many"}}}, env={})
    with pytest.raises(ConfigError, match="lowercase"):
        parse_sources({"sources": {"Bad-Name": {"url": "x"}}}, env={})


def test_include_and_exclude_patterns_are_sql_like_case_insensitive_and_an_escaped_underscore_is_literal():
    source = parse_sources(
        {"sources": {"s": {"url": "x", "include": ["public.%", "SALES.ORDER_%"], "exclude": ["S\\_%", "%\\_old"]}}},
        env={},
    )["s"]
    assert source.selects("public", "orders")
    assert source.selects("sales", "order_lines")  # case-insensitive, like Oracle-style patterns
    assert not source.selects("sales", "customers")  # not included
    assert not source.selects("public", "s_staging")  # excluded: starts with "s_"
    assert source.selects("public", "shipments")  # "S\_%" is not "S_%": the underscore is literal
    assert not source.selects("public", "orders_old")
    wildcard = parse_sources({"sources": {"s": {"url": "x", "exclude": ["S_%"]}}}, env={})["s"]
    assert not wildcard.selects("public", "shipments")  # unescaped "_" matches any one character


def test_postgres_columns_map_to_faithful_iceberg_kinds():
    assert numeric_precision_scale(786438) == (12, 2) and numeric_precision_scale(-1) == (0, 0)
    assert postgres_column("a", "numeric(12,2)", "numeric", 786438, "N").kind == "decimal"
    assert postgres_column("a", "numeric", "numeric", -1, "N").kind == "string"  # no fixed scale: exact text
    assert postgres_column("a", "integer[]", "_int4", -1, "A").kind == "string"
    assert postgres_column("a", "jsonb", "jsonb", -1, "U").read_as == "text"
    assert postgres_column("a", "smallint", "int2", -1, "N").kind == "int"
    domain = postgres_column("a", "positive_amount", "numeric", 524295, "N", domain=True)
    assert (domain.kind, domain.precision, domain.scale) == ("decimal", 8, 3)
    money = postgres_column("a", "short_text", "varchar", 14, "S", domain=True)
    assert (money.kind, money.read_as) == ("string", "varchar")


def test_catalog_rows_become_tables_with_their_primary_key_in_key_order_and_reads_cast_what_arrow_needs():
    rows = [
        ("public", "lines", "d", "line_no", "smallint", "int2", -1, "N", False, False, 2),
        ("public", "lines", "d", "order_id", "bigint", "int8", -1, "N", False, False, 1),
        ("public", "lines", "d", "detail", "jsonb", "jsonb", -1, "U", True, False, None),
        ("public", "log", "f", "at", "timestamp with time zone", "timestamptz", -1, "D", True, False, None),
    ]
    lines, log = tables_from_catalog(rows)
    assert lines.primary_key == ("order_id", "line_no") and lines.key == "public.lines"
    assert log.primary_key == () and log.replica_identity == "f" and log.iceberg_name == "public__log"
    assert select_statement(lines) == (
        'select "line_no", "order_id", case when "detail" is not null then '
        'concat("detail") end as "detail" from "public"."lines"'
    )


def test_log_positions_convert_both_ways():
    assert lsn_to_int("0/1875098") == 0x1875098
    assert lsn_to_int("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert int_to_lsn(lsn_to_int("16/B374D848")) == "16/B374D848"


def _table(*columns: SourceColumn, key=("id",)) -> SourceTable:
    return SourceTable("public", "t", columns, key)


def test_schema_diffs_name_every_added_removed_and_retyped_column():
    before = [
        {"name": "id", "type": "integer"},
        {"name": "price", "type": "numeric(10,2)"},
        {"name": "old", "type": "text"},
    ]
    after = [
        {"name": "id", "type": "integer"},
        {"name": "price", "type": "numeric(12,2)"},
        {"name": "new", "type": "date"},
    ]
    assert diff(None, after) == [("table_created", None)]
    assert diff(before, after) == [("column_added", "new"), ("column_removed", "old"), ("type_changed", "price")]
    assert diff(after, after) == []
    rows = [
        {
            "source": "app",
            "table_name": "public.t",
            "schema_version": 2,
            "schema_before": '[{"name": "price", "type": "numeric(10,2)"}]',
            "schema_after": '[{"name": "price", "type": "numeric(12,2)"}]',
            "change_type": "type_changed",
            "column_name": "price",
        }
    ]
    assert "type changed `price` numeric(10,2) -> numeric(12,2)" in message(rows)


def test_evolution_widens_in_place_replaces_incompatible_types_and_adds_and_drops_columns():
    old = _table(
        SourceColumn("id", "integer", "int", False),
        SourceColumn("qty", "integer", "int"),
        SourceColumn("price", "numeric(10,2)", "decimal", precision=10, scale=2),
        SourceColumn("code", "integer", "int"),
        SourceColumn("gone", "text", "string"),
    )
    new = _table(
        SourceColumn("id", "integer", "int", False),
        SourceColumn("qty", "bigint", "long"),
        SourceColumn("price", "numeric(12,2)", "decimal", precision=12, scale=2),
        SourceColumn("code", "text", "string"),
        SourceColumn("added", "date", "date"),
    )
    plan = plan_evolution(iceberg_schema(old), new)
    assert [c.name for c in plan.widened] == ["qty", "price"]
    assert [c.name for c in plan.replaced] == ["code"]
    assert [c.name for c in plan.added] == ["added"] and plan.removed == ("gone",) and plan.key is None
    assert not plan_evolution(iceberg_schema(new), new)
    rekeyed = plan_evolution(iceberg_schema(new), _table(*new.columns, key=("id", "code")))
    assert rekeyed.key == ("id", "code")


def test_oracle_numbers_dates_and_lobs_map_to_iceberg_kinds():
    def kind(data_type, precision=None, scale=None):
        c = oracle.oracle_column("c", data_type, precision, scale)
        return c.kind if c.kind != "decimal" else f"decimal({c.precision},{c.scale})"

    assert kind("NUMBER", 9, 0) == "int" and kind("NUMBER", 10, 0) == "long" and kind("NUMBER", 18, 0) == "long"
    assert kind("NUMBER", 19, 0) == "decimal(19,0)" and kind("NUMBER", 12, 2) == "decimal(12,2)"
    assert kind("NUMBER", 5, -2) == "int"  # rounded to hundreds: up to 7 digits, no fraction
    assert kind("NUMBER", 10, -10) == "decimal(20,0)"
    assert kind("NUMBER", None, 0) == "decimal(38,0)"  # NUMBER(*,0), INTEGER
    assert kind("NUMBER") == "string"  # no precision, no fixed scale: exact text
    assert kind("FLOAT", 126) == "double" and kind("BINARY_FLOAT") == "float" and kind("BINARY_DOUBLE") == "double"
    assert kind("DATE") == "timestamp"  # an Oracle DATE has a time of day
    assert kind("TIMESTAMP(6)") == "timestamp" and kind("TIMESTAMP(6) WITH TIME ZONE") == "timestamptz"
    assert kind("TIMESTAMP(3) WITH LOCAL TIME ZONE") == "timestamptz"
    assert kind("VARCHAR2") == kind("NVARCHAR2") == kind("CLOB") == kind("LONG") == "string"
    assert kind("RAW") == kind("BLOB") == kind("LONG RAW") == "binary"
    assert oracle.oracle_column("c", "NUMBER", 12, 2).source_type == "NUMBER(12,2)"


ORACLE_ROWS = [
    ("SALES", "ORDERS", "ORDER_ID", "NUMBER", 10, 0, "N", 1),
    ("SALES", "ORDERS", "NOTE", "LONG", None, None, "Y", None),
    ("SALES", "ORDERS", "PLACED", "DATE", None, None, "Y", None),
    ("SALES", "LINES", "ORDER_ID", "NUMBER", 10, 0, "N", 1),
    ("SALES", "LINES", "LINE_NO", "NUMBER", 4, 0, "N", 2),
]


def test_oracle_long_columns_are_excluded_skip_the_table_or_stay_for_an_error_as_configured():
    tables, skipped = oracle.tables_from_catalog(ORACLE_ROWS, long_columns="exclude")
    orders = tables[0]
    assert [c.name for c in orders.columns] == ["ORDER_ID", "PLACED"] and orders.skipped_columns == ("NOTE",)
    assert tables[1].primary_key == ("ORDER_ID", "LINE_NO") and not skipped
    tables, skipped = oracle.tables_from_catalog(ORACLE_ROWS, long_columns="skip_table")
    assert [t.name for t in tables] == ["LINES"] and "NOTE" in skipped["SALES.ORDERS"]
    tables, _ = oracle.tables_from_catalog(ORACLE_ROWS, long_columns="error")
    assert [c.name for c in tables[0].columns] == ["ORDER_ID", "NOTE", "PLACED"]  # read() raises for it


def test_oracle_reads_every_table_as_of_the_snapshot_scn_with_quoted_identifiers():
    tables, _ = oracle.tables_from_catalog(ORACLE_ROWS, long_columns="exclude")
    assert oracle.select_as_of_scn(tables[0]) == 'select "ORDER_ID", "PLACED" from "SALES"."ORDERS" as of scn :scn'
    odd = SourceTable('My "Schema"', "T", (SourceColumn('a"b', "VARCHAR2", "string"),))
    assert oracle.select_as_of_scn(odd) == 'select "a""b" from "My ""Schema"""."T" as of scn :scn'
    assert "current_scn from v$database" in oracle.CURRENT_SCN_QUERIES[0]
    assert "dbms_flashback.get_system_change_number" in oracle.CURRENT_SCN_QUERIES[1]
    assert "constraint_type = 'P'" in oracle.CATALOG_QUERY and "'SYS'" in oracle.CATALOG_QUERY


def test_tables_are_written_in_several_files_of_about_the_target_size_one_batch_at_a_time(tmp_path):
    """A real Iceberg table (SQL catalog on SQLite, files in a temp folder)."""
    from datetime import datetime, timezone

    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog

    from dw_platform.replication import iceberg

    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=tmp_path.as_uri())
    source = _table(SourceColumn("id", "bigint", "long", False), SourceColumn("name", "text", "string"))
    table, created = iceberg.load_or_create(catalog, ("bronze", "app"), source, file_size_mb=1)
    assert created
    batches = [
        pa.record_batch(
            {
                "id": pa.array(range(i * 50_000, (i + 1) * 50_000), pa.int64()),
                "name": pa.array([f"name {n}" for n in range(50_000)]),
            }
        )
        for i in range(4)
    ]
    files = []
    with table.transaction() as tx:
        layout = iceberg.BatchLayout.of(tx)
        lineage = dict(op="r", lsn=7, load_ts=datetime.now(timezone.utc), batch_id="b", source_file="app:public.t")
        with tx.update_snapshot().fast_append() as append:
            files = list(
                iceberg.write_files(tx, table, (iceberg.with_lineage(b, layout, **lineage) for b in batches), append)
            )
    assert files == [50_000] * 4  # each ~1.4 MB batch passes the 1 MiB target: a file each
    data = table.refresh().scan().to_arrow()
    assert data.num_rows == 200_000 and data.column("id").to_pylist() == list(range(200_000))
    assert set(data.column("_cdc_lsn").to_pylist()) == {7} and set(data.column("_cdc_op").to_pylist()) == {"r"}
    assert table.schema().identifier_field_ids == [1]


def test_duplicate_primary_keys_are_counted_over_every_key_column(tmp_path):
    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog

    from dw_platform.defs.replication.checks import duplicate_keys

    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=tmp_path.as_uri())
    catalog.create_namespace("n")
    data = pa.table({"a": pa.array([1, 1, 2, 2, 2], pa.int64()), "b": pa.array(["x", "y", "x", "x", "x"])})
    table = catalog.create_table(("n", "t"), data.schema)
    assert duplicate_keys(table, ["a"]) == 0  # no data yet
    table.append(data)
    assert duplicate_keys(table, ["a"]) == 3
    assert duplicate_keys(table, ["a", "b"]) == 2  # (2, x) three times


def _column(name, source_type, base, key=False):
    return {
        "name": name,
        "key": key,
        "type_oid": 0,
        "typmod": -1,
        "source_type": source_type,
        "base_type": base,
        "base_typmod": -1,
        "category": "N" if base != "text" else "S",
        "domain": False,
    }


def test_applying_the_same_batch_twice_leaves_the_same_table(tmp_path):
    """Idempotent by key and LSN: deleting the batch's keys and writing their latest images."""
    from pyiceberg.catalog.sql import SqlCatalog

    from dw_platform.lib.webhook import AlertWebhook
    from dw_platform.replication.apply import Apply, shape_table
    from dw_platform.replication.eventlog import LoggedEvent, RelationShape
    from dw_platform.replication.iceberg import load_or_create

    shape = RelationShape(
        1,
        "public",
        "t",
        "d",
        (_column("id", "bigint", "int8", key=True), _column("name", "text", "text"), _column("qty", "integer", "int4")),
    )
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=tmp_path.as_uri())
    table, _ = load_or_create(catalog, ("bronze", "s"), shape_table(shape), file_size_mb=1)

    def event(offset, op, before=None, after=None):
        return LoggedEvent(offset, 100 + offset, 0, op, 1, before, after, 0, 0)

    def row(i, name, qty):
        return {"id": str(i), "name": name, "qty": str(qty)}

    apply = Apply(
        parse_sources({"sources": {"s": {"url": "x"}}}, env={})["s"],
        None,
        AlertWebhook(),
        run_id=None,
        log=print,
        warn=print,
    )
    apply._shapes = {1: shape}
    seeding = [event(i, "c", after=row(i, f"n{i}", i)) for i in range(5)]
    batch = [
        event(10, "u", after=row(1, "one", 10)),
        event(11, "d", before={"id": "2", "name": None, "qty": None}),
        event(12, "c", after=row(7, "seven", 7)),
        event(13, "u", after=row(7, "SEVEN", 70)),
        event(14, "u", before={"id": "3", "name": None, "qty": None}, after=row(30, "moved", 3)),
    ]
    states = []
    for events in (seeding, batch, batch):
        with table.transaction() as tx:
            apply._write_by_key(tx, table, events, {"dw.batch-id": "b"})
        table = table.refresh()
        states.append(sorted((r["id"], r["name"], r["qty"]) for r in table.scan().to_arrow().to_pylist()))
    assert states[1] == states[2], states
    assert states[2] == [(0, "n0", 0), (1, "one", 10), (4, "n4", 4), (7, "SEVEN", 70), (30, "moved", 3)]


def _pg_string(text: str) -> bytes:
    return text.encode() + b"\0"


def _pg_tuple(*values) -> bytes:
    import struct

    out = struct.pack("!h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v == "TOAST":
            out += b"u"
        else:
            raw = v.encode()
            out += b"t" + struct.pack("!i", len(raw)) + raw
    return out


def test_every_pgoutput_message_of_protocol_1_decodes():
    import struct
    from datetime import datetime, timezone

    from dw_platform.replication import pgoutput as p

    micros = int((datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc) - p.PG_EPOCH).total_seconds() * 1e6)
    begin = p.decode(b"B" + struct.pack("!qqI", 0x1875098, micros, 734))
    assert begin == p.Begin(0x1875098, datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc), 734)
    commit = p.decode(b"C\0" + struct.pack("!qqq", 0x1875098, 0x18750C8, micros))
    assert (commit.commit_lsn, commit.end_lsn) == (0x1875098, 0x18750C8)
    relation = p.decode(
        b"R"
        + struct.pack("!I", 16385)
        + _pg_string("public")
        + _pg_string("orders")
        + b"d"
        + struct.pack("!h", 2)
        + b"\1"
        + _pg_string("id")
        + struct.pack("!Ii", 20, -1)
        + b"\0"
        + _pg_string("total")
        + struct.pack("!Ii", 1700, 786438)
    )
    assert relation.columns == (p.RelationColumn("id", True, 20, -1), p.RelationColumn("total", False, 1700, 786438))
    assert p.decode(b"Y" + struct.pack("!I", 99) + _pg_string("public") + _pg_string("mood")) == p.TypeInfo(
        99, "public", "mood"
    )
    assert p.decode(b"I" + struct.pack("!I", 16385) + b"N" + _pg_tuple("1", None)).new == ("1", None)
    plain = p.decode(b"U" + struct.pack("!I", 16385) + b"N" + _pg_tuple("1", "TOAST"))
    assert plain.old is None and plain.new == ("1", p.UNCHANGED_TOAST)
    rekeyed = p.decode(b"U" + struct.pack("!I", 16385) + b"K" + _pg_tuple("1", None) + b"N" + _pg_tuple("2", "é"))
    assert rekeyed.old == ("1", None) and rekeyed.new == ("2", "é")
    full = p.decode(b"D" + struct.pack("!I", 16385) + b"O" + _pg_tuple("1", "9.50"))
    assert full.old == ("1", "9.50")
    truncate = p.decode(b"T" + struct.pack("!iB", 2, 3) + struct.pack("!II", 16385, 16390))
    assert truncate == p.Truncate((16385, 16390), True, True)
    message = p.decode(
        b"M\1" + struct.pack("!q", 77) + _pg_string("dw_platform.heartbeat") + struct.pack("!i", 2) + b"hi"
    )
    assert message == p.Message(True, 77, "dw_platform.heartbeat", b"hi")
    assert p.decode(b"O" + struct.pack("!q", 5) + _pg_string("node_a")) == p.Origin(5, "node_a")
    with pytest.raises(p.DecodeError):
        p.decode(b"I" + struct.pack("!I", 16385) + b"N" + struct.pack("!h", 1) + b"t\0\0\0\x09abc")
    with pytest.raises(p.DecodeError):
        p.decode(b"Z")


def test_the_sensors_skip_quietly_when_no_source_is_configured(monkeypatch):
    import dagster as dg

    from dw_platform.defs.replication.sensors import evaluate, watch
    from dw_platform.lib.webhook import AlertWebhook

    monkeypatch.delenv("DW_REPLICATION_SOURCE_URL", raising=False)
    source = load_sources()["source_app"]
    context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral())
    assert "DW_REPLICATION_SOURCE_URL" in watch(context, source, None, AlertWebhook()).skip_message
    assert "DW_REPLICATION_SOURCE_URL" in evaluate(context, source, None).skip_message
