"""The ODBC reader child: retry classification, and a driver crash becoming a clear, retryable error."""

import os

import pytest

from dw_platform.lib.odbc import OdbcSource, SourceError
from dw_platform.lib.odbc_reader import is_transient


@pytest.mark.parametrize(
    ("sqlstate", "message", "connecting"),
    [
        ("08001", "could not connect to server: Connection refused", True),
        ("08001", "could not connect to server: No such file or directory", True),
        ("HY000", "server closed the connection unexpectedly", False),
        ("08S01", "Communication link failure", False),
        ("HY000", "Lost connection to server during query", False),
        ("HYT00", "Timeout expired", False),
    ],
)
def test_a_lost_or_unreachable_server_is_transient(sqlstate, message, connecting):
    assert is_transient(sqlstate, message, connecting)


@pytest.mark.parametrize(
    ("sqlstate", "message", "connecting"),
    [
        ("IM002", "[unixODBC][Driver Manager]Data source name not found and no default driver specified", True),
        ("08001", 'FATAL:  password authentication failed for user "dw"', True),
        ("08001", 'FATAL:  database "crm" does not exist', True),
        ("28000", "Login failed for user 'sa'", True),
        ("42P01", 'relation "dbo.customer_profile" does not exist', False),
        ("22007", "invalid input syntax for type timestamp", False),
    ],
)
def test_configuration_authentication_sql_and_data_errors_are_permanent(sqlstate, message, connecting):
    assert not is_transient(sqlstate, message, connecting)


def test_an_unknown_driver_fails_at_once_with_the_drivers_message():
    source = OdbcSource(connection_string="Driver={No Such Driver};Database=x", name="crm")
    with pytest.raises(SourceError, match="cannot connect to crm over ODBC") as failure:
        list(source.stream("select 1"))
    assert failure.value.transient is False


def test_a_reader_that_dies_mid_read_is_a_transient_error_naming_the_signal(source, monkeypatch):
    source.execute("create table t as select g as n from generate_series(1, 50000) g")
    odbc = OdbcSource(
        connection_string=os.environ["DW_CUSTOMER_ODBC"], dialect="postgresql", name="crm", fetch_size=1000
    )
    stream = odbc.stream("select n from t")
    assert len(next(stream)) == 1000
    # The driver crashing on a lost server looks like this from the parent: the child vanishes.
    os.kill(_reader_pid(), 11)
    with pytest.raises(SourceError, match=r"ODBC reader of crm died \(signal SIGSEGV\)") as failure:
        list(stream)
    assert failure.value.transient is True


def _reader_pid() -> int:
    import psutil

    children = [p for p in psutil.Process().children() if "dw_platform.lib.odbc_reader" in " ".join(p.cmdline())]
    assert len(children) == 1
    return children[0].pid


def test_copy_data_from_the_reader_lands_the_same_values_as_rows(source, warehouse):
    from datetime import date, datetime
    from decimal import Decimal

    from dw_platform.lib import bronze
    from dw_platform.lib.bronze import BronzeTable, Column, LoadScope

    source.execute("create table t (id int, name text, born date, seen timestamp, price numeric(10,2), ok boolean)")
    source.execute(
        "insert into t values (1, 'Zoë\ttab\nline', '1990-05-01', '2026-11-10 08:00:01.5', 12.30, true),"
        " (2, null, null, null, null, null)"
    )
    table = BronzeTable(
        "bronze",
        "t_copy",
        (
            Column("id", "integer"),
            Column("name", "text"),
            Column("born", "date"),
            Column("seen", "timestamp"),
            Column("price", "numeric"),
            Column("ok", "boolean"),
        ),
        version_key=("id",),
    )
    odbc = OdbcSource(connection_string=os.environ["DW_CUSTOMER_ODBC"], dialect="postgresql", name="crm")
    scope = LoadScope(("all",), bronze.sql.SQL("true"))
    columns = [(c.name, c.pg_type) for c in table.columns]

    result = bronze.load(
        warehouse,
        table,
        odbc.copy_stream("select * from t order by id", (), columns),
        asset_key="bronze/t_copy",
        scope=scope,
        source="test",
    )

    assert (result.rows_read, result.rows_loaded) == (2, 2)
    assert warehouse.execute("select id, name, born, seen, price, ok from bronze.t_copy order by id").fetchall() == [
        (1, "Zoë\ttab\nline", date(1990, 5, 1), datetime(2026, 11, 10, 8, 0, 1, 500000), Decimal("12.30"), True),
        (2, None, None, None, None, None),
    ]


def test_a_value_that_does_not_fit_its_column_names_row_and_column_and_is_not_retried(source):
    source.execute("create table t (id int, name text)")
    source.execute("insert into t values (1, 'a'), (2, 'b')")
    odbc = OdbcSource(connection_string=os.environ["DW_CUSTOMER_ODBC"], dialect="postgresql", name="crm")

    with pytest.raises(ValueError, match=r"row 1: column name \(integer\) got str 'a'"):
        list(odbc.copy_stream("select id, name from t order by id", (), [("id", "integer"), ("name", "integer")]))


def test_the_arrow_reader_fails_like_the_row_reader_on_a_bad_driver_and_a_crash(source):
    bad = OdbcSource(connection_string="Driver={No Such Driver};Database=x", name="crm")
    with pytest.raises(SourceError, match="cannot connect to crm over ODBC") as failure:
        list(bad.arrow_stream("select 1"))
    assert failure.value.transient is False

    source.execute("create table t as select g as n from generate_series(1, 50000) g")
    odbc = OdbcSource(
        connection_string=os.environ["DW_CUSTOMER_ODBC"], dialect="postgresql", name="crm", fetch_size=100
    )
    stream = odbc.arrow_stream("select n from t where n > ? order by n limit 1000", [0], page_rows=1000)
    assert next(stream).num_rows == 100
    os.kill(_reader_pid(), 9)
    with pytest.raises(SourceError, match=r"ODBC reader of crm died \(signal SIGKILL\)") as failure:
        list(stream)
    assert failure.value.transient is True


def test_keyset_pages_read_every_row_once_across_gaps(source):
    source.execute(
        "create table t as select g as n, g * 1.5 as x from generate_series(1, 100) g where g not between 20 and 60"
    )
    odbc = OdbcSource(connection_string=os.environ["DW_CUSTOMER_ODBC"], dialect="postgresql", name="crm", fetch_size=4)
    batches = list(
        odbc.arrow_stream("select n, x from t where n > ? and n <= ? order by n limit 7", [0, 90], page_rows=7)
    )
    assert [n for b in batches for n in b.column("n").to_pylist()] == [*range(1, 20), *range(61, 91)]


def test_the_read_is_bounded_by_a_value_the_reader_reads_first_on_its_own_connection(source):
    source.execute("create table t as select g as n from generate_series(1, 30) g")
    odbc = OdbcSource(connection_string=os.environ["DW_CUSTOMER_ODBC"], dialect="postgresql", name="crm", fetch_size=4)
    query = "select n from t where n > ? and n <= ? order by n limit 7"

    batches = list(odbc.arrow_stream(query, [10], page_rows=7, bound_query="select max(n) - 5 from t"))
    assert [n for b in batches for n in b.column("n").to_pylist()] == list(range(11, 26))
    assert list(odbc.arrow_stream(query, [30], page_rows=7, bound_query="select max(n) from t")) == []
    source.execute("truncate t")
    assert list(odbc.arrow_stream(query, [0], page_rows=7, bound_query="select max(n) from t")) == []
