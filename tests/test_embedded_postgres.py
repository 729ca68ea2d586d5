"""The embedded PostgreSQL is not open: passwords on every connection, a non-superuser pipeline
role, server settings for dead clients, and a state folder only its owner can read."""

import os
import stat

import psycopg
import pytest

from dw_platform.devenv import embedded


def test_a_connection_without_the_password_is_refused(server):
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(
            host=server["DW_PG_HOST"], port=server["DW_PG_PORT"], user="postgres", dbname="postgres", password="wrong"
        ).close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host=server["DW_PG_HOST"], port=server["DW_PG_PORT"], user=embedded.PIPELINE_ROLE, dbname="warehouse"
        ).close()


def test_the_pipeline_runs_as_a_role_that_owns_its_databases_and_only_reads_the_sources(server):
    with psycopg.connect(
        host=server["DW_PG_HOST"],
        port=server["DW_PG_PORT"],
        user=server["DW_PG_USER"],
        password=server["DW_PG_PASSWORD"],
        dbname="warehouse",
    ) as conn:
        superuser, createdb = conn.execute(
            "select rolsuper, rolcreatedb from pg_roles where rolname = current_user"
        ).fetchone()
        assert server["DW_PG_USER"] == embedded.PIPELINE_ROLE and not superuser and not createdb
        owners = dict(conn.execute("select datname, pg_get_userbyid(datdba) from pg_database").fetchall())
        assert owners["warehouse"] == owners["dagster"] == embedded.PIPELINE_ROLE
        assert owners["source_crm"] == "postgres"
        assert conn.execute("show client_connection_check_interval").fetchone()[0] == "5s"
    with psycopg.connect(
        host=server["DW_PG_HOST"],
        port=server["DW_PG_PORT"],
        user=server["DW_PG_USER"],
        password=server["DW_PG_PASSWORD"],
        dbname="source_crm",
        autocommit=True,
    ) as source:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            source.execute("create table written_by_the_pipeline (x int)")


def test_the_state_folder_and_its_secrets_are_readable_by_their_owner_only(server):
    home = embedded.state_dir()
    assert stat.S_IMODE(home.stat().st_mode) & 0o066 == 0  # no read or write for group and others
    for secret in ("pg_admin_password", "pg_dw_password", "pg_source_admin_password", "sales_fernet_keys"):
        assert stat.S_IMODE((home / secret).stat().st_mode) == 0o600
    for folder in ("azurite", "dagster"):
        assert stat.S_IMODE((home / folder).stat().st_mode) & 0o077 == 0, folder
    admin = (home / "pg_admin_password").read_text().strip()
    assert admin not in os.environ.values()


def test_what_an_older_state_folder_created_as_the_superuser_is_handed_to_the_pipeline_role(databases):
    """A state folder from before the pipeline role: its tables, views and dbt's helper functions
    belong to the superuser; the start-up hand-over gives them to the role, and touches nothing twice."""
    hand_over = embedded.HAND_OVER_OBJECTS.format(role=embedded.PIPELINE_ROLE)
    with embedded.admin_connection(databases["warehouse"]) as conn:
        conn.execute("create schema silver")
        conn.execute("create table silver.t (id serial primary key)")
        conn.execute("create view silver.v as select id from silver.t")
        conn.execute("create function public.dw_try_x(value text) returns int language sql immutable as $$ select 1 $$")
        conn.execute(hand_over)
        owners = conn.execute(
            """
            select 'schema', pg_get_userbyid(nspowner) from pg_namespace where nspname = 'silver'
            union all select relname, pg_get_userbyid(relowner) from pg_class
                where relname in ('t', 'v', 't_id_seq')
            union all select proname, pg_get_userbyid(proowner) from pg_proc where proname = 'dw_try_x'
            """
        ).fetchall()
        assert dict(owners) == dict.fromkeys(("schema", "t", "v", "t_id_seq", "dw_try_x"), embedded.PIPELINE_ROLE)
        conn.execute(hand_over)  # nothing left to hand over: no error, no lock taken


def test_the_pipeline_role_reads_the_source_tables_it_loads_and_no_other_database(server, databases, source):
    """Least privilege: the role is no member of pg_read_all_data; it reads the tables created in
    a sample source database (granted as they are created), not a table of another database."""
    source.execute("create schema crm")
    source.execute("create table crm.customer (id int)")
    source.execute("insert into crm.customer values (1)")
    with embedded.admin_connection("postgres") as admin:
        admin.execute("drop database if exists not_loaded with (force)")
        admin.execute("create database not_loaded")
    with embedded.admin_connection("not_loaded") as other:
        other.execute("create table payroll (salary int)")

    def as_pipeline(dbname: str) -> psycopg.Connection:
        return psycopg.connect(
            host=server["DW_PG_HOST"],
            port=server["DW_PG_PORT"],
            user=server["DW_PG_USER"],
            password=server["DW_PG_PASSWORD"],
            dbname=dbname,
            autocommit=True,
        )

    try:
        with as_pipeline(databases["source"]) as conn:
            assert conn.execute("select count(*) from crm.customer").fetchone()[0] == 1
            assert not conn.execute("select pg_has_role(current_user, 'pg_read_all_data', 'member')").fetchone()[0]
        with as_pipeline("not_loaded") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from payroll")
    finally:
        with embedded.admin_connection("postgres") as admin:
            admin.execute("drop database if exists not_loaded with (force)")
