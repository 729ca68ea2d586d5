"""The SoftCart web access-log pipeline on Azurite (and a local folder): sensor, bronze with
quarantine, archive after commit, the reconcile check, silver and gold traffic."""

import gzip
import hashlib
import json
import os
import uuid
from datetime import datetime, timezone

import dagster as dg
import pytest
from conftest import assert_column_lineage

from dw_platform.defs.softcart.assets import source_file
from dw_platform.defs.softcart.checks import (
    web_access_log_incoming_not_stale,
    web_access_log_lines_reconcile_with_file,
    web_access_log_no_identical_files,
)
from dw_platform.defs.softcart.partitions import weblog_files
from dw_platform.defs.softcart.resources import weblogs_landing_zone
from dw_platform.defs.softcart.sensors import scan_weblogs
from dw_platform.samples.softcart import BAD_LINES, access_log

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 23, 8, tzinfo=timezone.utc)
LOG = access_log(400, START)  # 9 quirky lines (5 odd but valid, 4 that do not parse) among 391 ordinary ones


def ingest(
    definitions: dg.Definitions,
    key: str,
    instance: dg.DagsterInstance | None = None,
    whole_job: bool = False,
    accept_identical: bool = False,
) -> dg.ExecuteInProcessResult:
    """Run the job `softcart_weblogs` for one file, or (faster, where dbt is not the point) only
    its bronze asset and checks."""
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(weblog_files.name, [key])
    job = definitions.resolve_job_def("softcart_weblogs")
    selection = None if whole_job else [dg.AssetKey(["bronze", "web_access_log"])]
    with pytest.MonkeyPatch.context() as env:
        if accept_identical:
            env.setenv("DW_SOFTCART_WEBLOGS_ACCEPT_IDENTICAL_FILES", "true")
        return job.execute_in_process(
            instance=instance, partition_key=key, raise_on_error=False, asset_selection=selection
        )


def metadata(result: dg.ExecuteInProcessResult) -> dict:
    event = next(
        e
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.path == ["bronze", "web_access_log"]
    )
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_the_sensor_requests_each_new_file_once_with_a_version_run_key(weblogs):
    weblogs.put("incoming/2026-11-23/a.log", LOG)
    weblogs.put("incoming/2026-11-23/b.log", LOG)
    weblogs.put("archive/old.log.gz", b"")
    instance = dg.DagsterInstance.ephemeral()

    first = scan_weblogs(dg.build_sensor_context(instance=instance), weblogs)
    assert [r.partition_key for r in first.run_requests] == ["2026-11-23/a.log", "2026-11-23/b.log"]
    assert all(r.run_key.startswith(r.partition_key + "@") for r in first.run_requests)
    assert list(first.dynamic_partitions_requests[0].partition_keys) == ["2026-11-23/a.log", "2026-11-23/b.log"]

    instance.add_dynamic_partitions(weblog_files.name, ["2026-11-23/a.log", "2026-11-23/b.log"])
    again = scan_weblogs(dg.build_sensor_context(instance=instance, cursor=first.cursor), weblogs)
    assert again.run_requests == []

    weblogs.put("incoming/2026-11-23/a.log", LOG + LOG)  # re-uploaded: a new version runs again
    changed = scan_weblogs(dg.build_sensor_context(instance=instance, cursor=again.cursor), weblogs)
    assert [r.partition_key for r in changed.run_requests] == ["2026-11-23/a.log"]
    assert changed.dynamic_partitions_requests == []


def test_a_log_loads_every_line_quarantines_the_bad_ones_and_is_archived_after_commit(weblogs, definitions, warehouse):
    weblogs.put("incoming/2026-11-23/access.log", LOG)

    result = ingest(definitions, "2026-11-23/access.log")

    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    meta = metadata(result)
    assert (meta["lines"], meta["dagster/partition_row_count"], meta["lines_quarantined"]) == (400, 396, 4)
    assert meta["archived_to"] == "archive/2026-11-23/access.log.gz"

    # The file left incoming/; the archive holds the original bytes.
    assert weblogs.find("incoming/2026-11-23/access.log") is None
    archived = weblogs.find("archive/2026-11-23/access.log.gz")
    assert gzip.decompress(b"".join(weblogs.chunks(archived))) == LOG

    quarantined = warehouse.execute(
        "select raw_line, reason from bronze.web_access_log_quarantine order by line_number"
    ).fetchall()
    assert [q[0] for q in quarantined] == BAD_LINES
    assert quarantined[0][1] == "not an access log line: no [timestamp]"
    source = warehouse.execute("select distinct _bronze_source_file from bronze.web_access_log").fetchall()
    assert source == [
        (f"azure://devstoreaccount1/{os.environ['DW_SOFTCART_WEBLOGS_CONTAINER']}/incoming/2026-11-23/access.log",)
    ]
    tls = warehouse.execute(
        "select request, method, status, bytes_sent from bronze.web_access_log where request like '%%x16%%'"
    ).fetchone()
    assert tls == ("\\x16\\x03\\x01\\x02\\x00\\x01", None, "400", "226")


def test_a_rerun_reads_the_archive_and_replaces_the_files_rows(weblogs, definitions, warehouse):
    weblogs.put("incoming/day/access.log", LOG)
    instance = dg.DagsterInstance.ephemeral()
    assert ingest(definitions, "day/access.log", instance).success

    again = ingest(definitions, "day/access.log", instance)

    assert again.success and all(e.passed for e in again.get_asset_check_evaluations())
    assert warehouse.execute("select count(*), count(distinct line_number) from bronze.web_access_log").fetchone() == (
        396,
        396,
    )
    assert warehouse.execute("select count(*) from bronze.web_access_log_quarantine").fetchone()[0] == 4
    assert weblogs.find("archive/day/access.log.gz") is not None


def test_the_reconcile_check_fails_when_bronze_lost_a_line(weblogs, definitions, warehouse, warehouse_resource):
    weblogs.put("incoming/x.log", LOG)
    assert ingest(definitions, "x.log").success
    warehouse.execute("delete from bronze.web_access_log where line_number = 10")
    resources = {
        "warehouse": warehouse_resource,
        "softcart_weblogs": weblogs_landing_zone().process_config_and_initialize(),
    }

    result = web_access_log_lines_reconcile_with_file(dg.build_asset_check_context(), **resources)

    assert not result.passed
    assert (result.metadata["lines_loaded"].value, result.metadata["lines"].value) == (395, 400)


def test_silver_is_typed_and_gold_counts_traffic_per_day_and_hour(weblogs, definitions, warehouse):
    lines = [
        '203.0.113.7 - - [23/Nov/2026:10:15:32 +0200] "GET /products?page=2 HTTP/1.1" 200 1000 "-" "Mozilla/5.0 Firefox"',
        '2001:db8::1 - alice [23/Nov/2026:08:40:00 +0000] "GET /products HTTP/1.1" 404 - "-" "Mozilla/5.0 \\"Edge\\""',
        '203.0.113.7 - - [23/Nov/2026:01:59:59 -0700] "POST /cart HTTP/1.1" 500 20 "https://x/" "Googlebot/2.1"',
        'host.example.com - - [23/Nov/2026:09:10:00 +0000] "-" 408 - "-" "-"',
    ]
    weblogs.put("incoming/typed.log", "\n".join(lines).encode())

    result = ingest(definitions, "typed.log", whole_job=True)
    assert result.success
    assert_column_lineage(result)

    rows = warehouse.execute(
        "select host(client_ip), client, remote_user, requested_at, status, bytes_sent, user_agent, is_bot, is_error,"
        " request_hour, path_without_query from silver.web_requests order by line_number"
    ).fetchall()
    utc = timezone.utc
    assert rows == [
        (
            "203.0.113.7",
            "203.0.113.7",
            None,
            datetime(2026, 11, 23, 8, 15, 32, tzinfo=utc),
            200,
            1000,
            "Mozilla/5.0 Firefox",
            False,
            False,
            8,
            "/products",
        ),
        (
            "2001:db8::1",
            "2001:db8::1",
            "alice",
            datetime(2026, 11, 23, 8, 40, tzinfo=utc),
            404,
            0,
            'Mozilla/5.0 "Edge"',
            False,
            True,
            8,
            "/products",
        ),
        (
            "203.0.113.7",
            "203.0.113.7",
            None,
            datetime(2026, 11, 23, 8, 59, 59, tzinfo=utc),
            500,
            20,
            "Googlebot/2.1",
            True,
            True,
            8,
            "/cart",
        ),
        (None, "host.example.com", None, datetime(2026, 11, 23, 9, 10, tzinfo=utc), 408, 0, None, False, True, 9, None),
    ]
    hourly = warehouse.execute(
        "select request_hour, requests, bot_requests, unique_visitors, bytes_sent, error_rate"
        " from gold.web_traffic_hourly order by request_hour"
    ).fetchall()
    assert [tuple(map(float, r)) for r in hourly] == [(8, 3, 1, 2, 1020, 0.6667), (9, 1, 0, 1, 0, 1.0)]
    top = warehouse.execute("select rank, path, requests from gold.web_top_paths order by rank").fetchall()
    assert top == [(1, "/products", 2)]


@pytest.fixture
def local_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DW_SOFTCART_WEBLOGS_DIR", str(tmp_path))
    return tmp_path


def test_a_local_folder_works_as_the_landing_zone(local_folder, definitions, warehouse):
    tmp_path = local_folder
    (tmp_path / "incoming").mkdir()
    (tmp_path / "incoming" / "local.log").write_bytes(LOG)
    zone = weblogs_landing_zone().process_config_and_initialize().landing()
    tick = scan_weblogs(dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral()), zone)
    assert [r.partition_key for r in tick.run_requests] == ["local.log"]

    assert ingest(definitions, "local.log").success
    assert not (tmp_path / "incoming" / "local.log").exists()
    assert gzip.decompress((tmp_path / "archive" / "local.log.gz").read_bytes()) == LOG
    assert warehouse.execute("select count(*) from bronze.web_access_log").fetchone()[0] == 396


# --- files as they arrive in the wild: hostile lines, compression, failures, re-sent files ----------

BIG = access_log(10_000, START, quirks=False)  # a realistic 10,000-line Combined Log Format log
HOSTILE = b'198.51.100.66 - - [23/Nov/2026:10:15:32 +0000] "GET /\xff\xfe\x00 HTTP/1.1" 200 12 "-" "x"'


def bronze_rows(warehouse, source_like: str = "%") -> list[tuple]:
    """The loaded lines as the parser gave them, lineage aside."""
    return warehouse.execute(
        "select line_number, client_ip, identity, remote_user, time_local, request, method, path, protocol, status,"
        " bytes_sent, referrer, user_agent from bronze.web_access_log where _bronze_source_file like %s"
        " order by line_number",
        (source_like,),
    ).fetchall()


def test_a_line_with_invalid_utf8_and_a_nul_is_quarantined_byte_exact_and_every_other_line_loads(
    weblogs, definitions, warehouse
):
    lines = BIG.split(b"\n")
    lines[4999] = HOSTILE
    weblogs.put("incoming/hostile.log", b"\n".join(lines))

    result = ingest(definitions, "hostile.log")

    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    assert (metadata(result)["dagster/partition_row_count"], metadata(result)["lines_quarantined"]) == (9_999, 1)
    line, raw_line, raw_bytes, reason = warehouse.execute(
        "select line_number, raw_line, raw_bytes, reason from bronze.web_access_log_quarantine"
    ).fetchone()
    assert (line, bytes(raw_bytes), reason) == (5000, HOSTILE, "not UTF-8 (byte 0xff at byte 54)")
    assert (
        raw_line == '198.51.100.66 - - [23/Nov/2026:10:15:32 +0000] "GET /\ufffd\ufffd\u2400 HTTP/1.1" 200 12 "-" "x"'
    )


def test_a_gzip_log_loads_exactly_like_the_plain_one_and_is_archived_as_it_arrived(weblogs, definitions, warehouse):
    packed = gzip.compress(BIG)
    weblogs.put("incoming/plain/access.log", BIG)
    weblogs.put("incoming/rotated/access.log.1.gz", packed)
    instance = dg.DagsterInstance.ephemeral()

    plain = ingest(definitions, "plain/access.log", instance)
    rotated = ingest(definitions, "rotated/access.log.1.gz", instance, accept_identical=True)

    assert plain.success and rotated.success
    assert all(e.passed for e in rotated.get_asset_check_evaluations())
    assert bronze_rows(warehouse, "%/plain/access.log") == bronze_rows(warehouse, "%/rotated/access.log.1.gz")
    assert len(bronze_rows(warehouse, "%/rotated/access.log.1.gz")) == 10_000
    assert metadata(rotated)["archived_to"] == "archive/rotated/access.log.1.gz"
    archived = weblogs.find("archive/rotated/access.log.1.gz")
    assert b"".join(weblogs.chunks(archived)) == packed  # the archive keeps the original bytes
    assert weblogs.find("incoming/rotated/access.log.1.gz") is None


def test_a_file_claiming_gzip_that_is_not_fails_saying_so_and_is_filed_in_failed_with_its_report(
    weblogs, definitions, warehouse
):
    weblogs.put("incoming/access.log.2.gz", LOG)

    result = ingest(definitions, "access.log.2.gz")

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    assert "access.log.2.gz claims gzip compression (its name ends in .gz) but is not compressed" in message
    assert weblogs.find("incoming/access.log.2.gz") is None
    assert b"".join(weblogs.chunks(weblogs.find("failed/access.log.2.gz"))) == LOG
    report = json.loads(b"".join(weblogs.chunks(weblogs.find("failed/access.log.2.gz.report.json"))))
    assert report["status"] == "failed" and "claims gzip compression" in report["error"]
    assert warehouse.execute("select status from bronze.batch_ledger").fetchall() == [("failed",)]

    weblogs.put("incoming/access.log.2.gz", gzip.compress(LOG))  # sent again, compressed this time
    assert ingest(definitions, "access.log.2.gz").success
    assert [f.path for f in weblogs.list()] == ["archive/access.log.2.gz"]  # the failed copy and report are gone


def test_a_file_resent_under_another_name_adds_no_rows_is_filed_with_a_note_and_shown_by_its_check(
    weblogs, definitions, warehouse, warehouse_resource
):
    weblogs.put("incoming/2026-11-23/access.log", LOG)
    weblogs.put("incoming/2026-11-23/access.log.copy", LOG)
    instance = dg.DagsterInstance.ephemeral()
    assert ingest(definitions, "2026-11-23/access.log", instance).success

    again = ingest(definitions, "2026-11-23/access.log.copy", instance)

    assert not again.success
    assert warehouse.execute("select count(*) from bronze.web_access_log").fetchone()[0] == 396
    assert warehouse.execute("select count(*) from bronze.web_access_log_quarantine").fetchone()[0] == 4
    status, error, sha = warehouse.execute(
        "select status, error, content_sha256 from bronze.batch_ledger order by started_at desc limit 1"
    ).fetchone()
    assert status == "identical" and sha == hashlib.sha256(LOG).hexdigest()
    first = source_file(weblogs, "2026-11-23/access.log")
    assert f"{first}.copy holds the same bytes as {first}, loaded in batch" in error
    report = json.loads(b"".join(weblogs.chunks(weblogs.find("failed/2026-11-23/access.log.copy.report.json"))))
    assert report["status"] == "identical" and report["identical_to"]["file"] == first
    check = web_access_log_no_identical_files(warehouse=warehouse_resource)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["refused"].value.startswith(f"2026-11-23/access.log.copy: {first}.copy holds the same")

    # Where identical files are legitimate, the switch lets a re-run load it.
    assert ingest(definitions, "2026-11-23/access.log.copy", instance, accept_identical=True).success
    assert warehouse.execute("select count(*) from bronze.web_access_log").fetchone()[0] == 2 * 396


def test_a_file_whose_run_failed_on_an_outage_is_requested_again_and_files_waiting_too_long_are_reported(
    weblogs, monkeypatch
):
    weblogs.put("incoming/late.log", LOG)
    instance = dg.DagsterInstance.ephemeral()
    first = scan_weblogs(dg.build_sensor_context(instance=instance), weblogs)
    [request] = first.run_requests
    instance.add_dynamic_partitions(weblog_files.name, ["late.log"])
    # The run ended without loading the file (storage or warehouse gone after its retries).
    run = dg.DagsterRun(
        job_name="softcart_weblogs",
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED,
        tags={**request.tags, "dagster/partition": "late.log"},
    )
    instance.add_run(run)
    instance.report_run_failed(run)

    again = scan_weblogs(dg.build_sensor_context(instance=instance, cursor=first.cursor), weblogs, retry_after_s=0)

    assert [(r.partition_key, r.run_key) for r in again.run_requests] == [("late.log", f"{request.run_key}#2")]
    monkeypatch.setenv("DW_SOFTCART_MAX_WAIT_MINUTES", "0")
    stale = web_access_log_incoming_not_stale(softcart_weblogs=weblogs_landing_zone().process_config_and_initialize())
    assert not stale.passed and stale.metadata["longest_waiting"].value.startswith("incoming/late.log (")
