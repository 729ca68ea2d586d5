"""The columns of a table dbt built (`dagster/column_schema`: names, types, the .yml's descriptions)
and the column-level lineage of a model (`dagster/column_lineage`): which columns of which
upstream assets each of its columns is computed from, traced by sqlglot through the model's
compiled SQL. Both read the warehouse's catalog on the run's one connection.

dagster-dbt can attach both (`fetch_column_metadata`), but through a dbt adapter it sets up in
the run's process before dbt starts (2-3 s of every run here) and a thread pool whose feeder polls
without sleeping while dbt runs (a core taken from dbt on a small machine); and for lineage it
first runs sqlglot's whole optimizer over the SQL, which fails on some valid PostgreSQL (an
empty select list in `not exists (select from ...)` raised `list index out of range` on every
build of a model), then logs the failure with its traceback. Here sqlglot's `lineage` traces the
SQL as written (it qualifies the columns it needs), and a model it cannot trace gets one warning
naming it, and no lineage, instead of a failed or noisy build.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
from sqlglot import MappingSchema, exp, parse_one, to_table
from sqlglot.expressions import normalize_table_name
from sqlglot.lineage import lineage

DIALECT = "postgres"


def trace(
    sql: str,
    columns: Sequence[str],
    upstream: Mapping[str, Mapping[str, str]],
    asset_keys: Mapping[str, dg.AssetKey],
) -> dg.TableColumnLineage:
    """The lineage of `columns` (the model's, as built) through `sql`. `upstream` holds the
    columns and types of every relation the SQL reads ({relation name: {column: type}}, needed
    to expand `select *`); `asset_keys` maps a relation name to its asset. A column computed
    from no upstream column (a constant, a row number) has no dependencies."""
    schema = MappingSchema(dialect=DIALECT)
    for relation, relation_columns in upstream.items():
        schema.add_table(to_table(relation, dialect=DIALECT), dict(relation_columns), dialect=DIALECT)
    parsed = parse_one(sql, dialect=DIALECT)
    for table in parsed.find_all(exp.Table):
        # The temporary key lists of incremental models (macros/changed_keys.sql), gone by now:
        # one column, `key`.
        if table.db == "pg_temp" and upstream:
            catalog = to_table(next(iter(upstream)), dialect=DIALECT).catalog  # the schema's nesting
            temporary = exp.table_(table.name, db="pg_temp", catalog=catalog or None)
            schema.add_table(temporary, {"key": "text"}, dialect=DIALECT)
    keys = {normalize_table_name(to_table(r, dialect=DIALECT), dialect=DIALECT): k for r, k in asset_keys.items()}
    traced = lineage(None, parsed, schema, dialect=DIALECT)
    by_name = {name.lower(): node for name, node in traced.items()}
    deps_by_column = {}
    for column in columns:
        deps = set()
        node = by_name.get(column.lower())
        for leaf in node.walk() if node else ():
            table = leaf.expression.find(exp.Table) if not leaf.downstream else None
            key = keys.get(normalize_table_name(table, dialect=DIALECT)) if table else None
            if key is not None:
                deps.add(dg.TableColumnDep(asset_key=key, column_name=exp.to_column(leaf.name).name.lower()))
        deps_by_column[column] = sorted(deps, key=lambda d: (d.asset_key.to_user_string(), d.column_name))
    return dg.TableColumnLineage(deps_by_column=deps_by_column)


def relation_columns(conn: psycopg.Connection, relations: Sequence[str]) -> dict[str, dict[str, str]]:
    """{relation name: {column: type}} from the warehouse's catalog, in column order."""
    wanted = {(t.db, t.name): r for r in relations for t in [to_table(r, dialect=DIALECT)]}
    found: dict[str, dict[str, str]] = {r: {} for r in relations}
    rows = conn.execute(
        "select table_schema, table_name, column_name, data_type from information_schema.columns "
        "where (table_schema, table_name) in (select * from unnest(%s::text[], %s::text[])) "
        "order by table_schema, table_name, ordinal_position",
        ([s for s, _ in wanted], [n for _, n in wanted]),
    ).fetchall()
    for schema_name, table_name, column, data_type in rows:
        found[wanted[(schema_name, table_name)]][column] = data_type
    return found


def with_column_schema(output: dg.Output, conn: psycopg.Connection, manifest: Mapping[str, Any]) -> dg.Output:
    """A dbt output with `dagster/column_schema`: the built relation's columns and types, each
    with the description the node's .yml gives it. Nodes that build nothing (tests) are unchanged."""
    node = manifest["nodes"].get(output.metadata["unique_id"].value, {})
    relation = node.get("relation_name")
    columns = relation_columns(conn, [relation])[relation] if relation else {}
    if not columns:
        return output
    described = {name.lower(): column.get("description") for name, column in node.get("columns", {}).items()}
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(name, data_type, description=described.get(name.lower()) or None)
            for name, data_type in columns.items()
        ]
    )
    return output.with_metadata({**output.metadata, "dagster/column_schema": schema})


def with_column_lineage(
    output: dg.Output,
    conn: psycopg.Connection,
    manifest: Mapping[str, Any],
    target_path: Path,
    asset_key_of: Callable[[str], dg.AssetKey],
    warn: Callable[[str], None],
) -> dg.Output:
    """A dbt model's output with `dagster/column_lineage` added; seeds and other nodes unchanged.
    A model whose SQL cannot be traced is left without lineage, with one warning naming it."""
    node = manifest["nodes"].get(output.metadata["unique_id"].value, {})
    if node.get("resource_type") != "model":
        return output
    try:
        parents = [manifest["nodes"].get(p) or manifest["sources"][p] for p in node["depends_on"]["nodes"]]
        relations = [p["relation_name"] for p in parents if p.get("relation_name")]
        catalog = relation_columns(conn, [node["relation_name"], *relations])
        compiled = target_path / "compiled" / node["package_name"] / node["original_file_path"]
        traced = trace(
            compiled.read_text(),
            list(catalog[node["relation_name"]]),
            catalog,  # the model's own columns too: an incremental model may read itself
            {p["relation_name"]: asset_key_of(p["unique_id"]) for p in parents if p.get("relation_name")},
        )
    except Exception as exc:  # sqlglot cannot read every SQL construct: the build stands without lineage
        warn(
            f"no column lineage for dbt model {node['name']}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        )
        return output
    return output.with_metadata({**output.metadata, "dagster/column_lineage": traced})
