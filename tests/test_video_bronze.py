"""The video domain's bronze on a real PostgreSQL, reading from a local folder and from Azurite.

Raw documents in MongoDB are tested with mongomock, an in-memory STAND-IN implementing the
pymongo API (no MongoDB server can be had on this machine): the asset's code path is the same
(`MongoDocuments.client()` is the only thing swapped). `test_raw_documents_reach_a_real_mongodb`
runs the same path against a real server when DW_MONGODB_URI is set.
"""

import gzip
import json
import os
import uuid
from decimal import Decimal

import dagster as dg
import mongomock
import pytest
from conftest import warehouse_from_env

from dw_platform.defs.video import checks as video_checks
from dw_platform.defs.video.assets import content, video_users, video_viewing_sessions
from dw_platform.lib.blob import BlobStorage
from dw_platform.lib.documents import MongoDocuments
from dw_platform.lib.landing import BlobLanding, LandingZone, LocalLanding
from dw_platform.samples import video as sample

DAY = "2026-11-20"
NEXT_DAY = "2026-11-21"
MOCK_MONGO = mongomock.MongoClient()


class StandInMongo(MongoDocuments):
    """MongoDocuments whose client is the in-memory mongomock stand-in, not a server."""

    def client(self):
        return MOCK_MONGO


@pytest.fixture
def folder(tmp_path, server) -> LandingZone:
    return LandingZone(local_folder=str(tmp_path / "landing"))


@pytest.fixture
def container(server):
    name = f"video-{uuid.uuid4().hex[:12]}"
    zone = LandingZone(container=name, connection_string=os.environ["DW_BLOB_CONNECTION_STRING"])
    yield zone
    BlobStorage(
        container=name, connection_string=os.environ["DW_BLOB_CONNECTION_STRING"]
    ).service_client().delete_container(name)


def land(zone: LandingZone, day: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        zone.landing().put(f"{day}/{name}", data)


def ingest(zone: LandingZone, day: str, assets=None, documents: MongoDocuments | None = None):
    assets = assets or [video_users, video_viewing_sessions, content]
    check_defs = [
        getattr(video_checks, n)
        for n in dir(video_checks)
        if isinstance(getattr(video_checks, n), dg.AssetChecksDefinition)
    ]
    keys = {key for a in assets for key in a.keys}
    check_defs = [c for c in check_defs if next(iter(c.check_keys)).asset_key in keys]
    return dg.materialize(
        [*assets, *check_defs],
        partition_key=day,
        raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral(),
        resources={
            "warehouse": warehouse_from_env(),
            "video_landing": zone,
            "video_documents": documents or MongoDocuments(),
        },
    )


def check_results(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_the_local_folder_and_the_blob_container_give_the_same_files(tmp_path, container):
    local, blob = LocalLanding(tmp_path), container.landing()
    assert isinstance(blob, BlobLanding)
    for zone in (local, blob):
        zone.put("2026-11-20/users.csv", b"user_id\r\nU1\r\n")
        found = zone.find("2026-11-20/users.csv")
        assert found.size == 13 and found.uri.endswith("/2026-11-20/users.csv")
        assert b"".join(zone.chunks(found)) == b"user_id\r\nU1\r\n"
        assert zone.find("2026-11-20/missing.csv") is None
    # Lineage names stay the same from run to run (not Azurite's changing port).
    assert (
        blob.find("2026-11-20/users.csv").uri == f"azure://devstoreaccount1/{container.container}/2026-11-20/users.csv"
    )
    assert local.find("2026-11-20/users.csv").uri == f"file://{tmp_path.resolve()}/2026-11-20/users.csv"
    with pytest.raises(ValueError):
        local.find("../outside.csv")


@pytest.mark.parametrize("where", ["folder", "container"])
def test_a_day_of_csv_files_lands_once_with_lineage_ledger_and_checks_from_either_landing(request, where, warehouse):
    zone = request.getfixturevalue(where)
    land(zone, DAY, sample.sample_files(sample.date.fromisoformat(DAY)))

    result = ingest(zone, DAY, [video_users, video_viewing_sessions])

    assert result.success
    assert check_results(result) and all(check_results(result).values()), check_results(result)
    users = warehouse.execute(
        "select count(*), min(arrival_date)::text, count(distinct _bronze_batch_id), min(_bronze_source_file)"
        " from bronze.video_users"
    ).fetchone()
    assert users[:3] == (41, DAY, 1) and users[3].endswith(f"/{DAY}/users.csv")
    assert warehouse.execute("select count(*) from bronze.video_viewing_sessions").fetchone()[0] == 200
    ledger = warehouse.execute(
        "select target_table, partition_key, rows_loaded, status from bronze.batch_ledger order by target_table"
    ).fetchall()
    assert ledger == [
        ("bronze.video_users", DAY, 41, "succeeded"),
        ("bronze.video_viewing_sessions", DAY, 200, "succeeded"),
    ]


def test_rerunning_a_day_replaces_its_rows_and_other_days_stay(folder, warehouse):
    land(folder, DAY, {"users.csv": sample.to_csv(sample.USERS_HEADER, sample.users(sample.date(2026, 11, 20), 5))})
    land(
        folder, NEXT_DAY, {"users.csv": sample.to_csv(sample.USERS_HEADER, sample.users(sample.date(2026, 11, 21), 3))}
    )
    assert ingest(folder, DAY, [video_users]).success
    assert ingest(folder, NEXT_DAY, [video_users]).success

    assert ingest(folder, DAY, [video_users]).success

    counts = warehouse.execute(
        "select arrival_date::text, count(*) from bronze.video_users group by 1 order by 1"
    ).fetchall()
    assert counts == [(DAY, 6), (NEXT_DAY, 4)]


def test_a_csv_row_without_its_key_is_quarantined_with_the_reason(folder, warehouse):
    rows = sample.users(sample.date(2026, 11, 20), 3)
    rows[1][0] = ""
    land(folder, DAY, {"users.csv": sample.to_csv(sample.USERS_HEADER, rows) + b"U9,only-two-fields\r\n"})

    result = ingest(folder, DAY, [video_users])

    assert result.success and all(check_results(result).values())
    assert warehouse.execute("select line_number, reason from bronze.video_quarantine order by 1").fetchall() == [
        (3, "user_id: missing required value"),
        (6, "expected 6 fields, found 2"),
    ]


def test_a_missing_file_fails_the_day_with_a_clear_message(folder, warehouse):
    result = ingest(folder, DAY, [video_users])

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"{DAY}/users.csv has not arrived" in failure.step_failure_data.user_failure_data.description


def test_content_documents_flatten_into_prefixed_columns_and_child_tables(folder, warehouse):
    docs = sample.content_documents(3)
    land(folder, DAY, {"content.json": sample.content_file(docs)})

    result = ingest(folder, DAY, [content])

    assert result.success and all(check_results(result).values()), check_results(result)
    row = warehouse.execute(
        "select content_id, title, release_year, release_studio, ratings_imdb, ratings_rotten_tomatoes,"
        " availability_us, availability_de from bronze.content where content_id = 'C001'"
    ).fetchone()
    assert row == (
        "C001",
        "Title 1",
        2001,
        "Studio 1",
        Decimal(str(docs[0]["ratings"]["imdb"])),
        docs[0]["ratings"]["rotten_tomatoes"],
        True,
        True,
    )
    genres = warehouse.execute(
        "select position, value from bronze.content_genres where content_id = 'C002' order by position"
    ).fetchall()
    assert genres == list(enumerate(docs[1]["genres"], start=1))
    cast = warehouse.execute(
        "select content_id, position, name, role from bronze.content_cast order by 1, 2"
    ).fetchall()
    assert cast[:2] == [("C001", 1, "Actor 1-1", "lead"), ("C001", 2, "Actor 1-2", "support")] and len(cast) == 6
    types = dict(
        warehouse.execute(
            "select column_name, data_type from information_schema.columns"
            " where table_schema = 'bronze' and table_name = 'content'"
        ).fetchall()
    )
    assert types["ratings_imdb"] == "numeric" and types["availability_us"] == "boolean" and types["title"] == "text"
    quarantined = warehouse.execute("select line_number, reason from bronze.video_quarantine").fetchall()
    assert len(quarantined) == 1 and quarantined[0][0] == 4 and quarantined[0][1].startswith("malformed JSON")
    raw = warehouse.execute("select document from bronze.content_raw where content_id = 'C003'").fetchone()[0]
    assert raw == json.loads(json.dumps(docs[2]))


def test_a_new_field_in_a_later_file_becomes_a_recorded_column(folder, warehouse):
    land(folder, DAY, {"content.json": sample.content_file(sample.content_documents(3), malformed=False)})
    land(
        folder,
        NEXT_DAY,
        {"content.json": sample.content_file(sample.content_documents(2, extra_field=True), malformed=False)},
    )
    assert ingest(folder, DAY, [content]).success

    result = ingest(folder, NEXT_DAY, [content])

    assert result.success and all(check_results(result).values()), check_results(result)
    values = warehouse.execute(
        "select arrival_date::text, maturity_rating from bronze.content order by arrival_date, content_id"
    ).fetchall()
    assert values == [(DAY, None)] * 3 + [(NEXT_DAY, "PG-13")] * 2
    change = warehouse.execute(
        "select pg_type, source_file from bronze.video_schema_changes"
        " where table_name = 'bronze.content' and column_name = 'maturity_rating'"
    ).fetchone()
    assert change[0] == "text" and change[1].endswith(f"{NEXT_DAY}/content.json")


def test_a_value_that_breaks_a_columns_type_quarantines_its_document_not_the_file(folder, warehouse):
    docs = sample.content_documents(3)
    land(folder, DAY, {"content.json": sample.content_file(docs, malformed=False)})
    assert ingest(folder, DAY, [content]).success
    later = sample.content_documents(3)
    later[0]["genres"] = "Drama"  # was an array (a child table), now a scalar
    later[1]["ratings"]["imdb"] = "excellent"
    later.insert(2, ["not", "an", "object"])
    later.insert(3, {"title": "no id"})
    land(folder, NEXT_DAY, {"content.json": json.dumps(later).encode()})

    result = ingest(folder, NEXT_DAY, [content])

    assert result.success
    reasons = [r[0] for r in warehouse.execute("select reason from bronze.video_quarantine order by line_number")]
    assert reasons == [
        'genres: an array in earlier documents, now "Drama"',
        'ratings_imdb: "excellent" does not fit the column\'s type numeric',
        "a document must be a JSON object, found list",
        "content_id: missing required value",
    ]
    assert (
        warehouse.execute("select count(*) from bronze.content where arrival_date = %s", (NEXT_DAY,)).fetchone()[0] == 1
    )


def test_raw_documents_go_to_mongodb_when_configured_using_the_mongomock_stand_in(folder, warehouse):
    docs = sample.content_documents(4)
    land(folder, DAY, {"content.json": sample.content_file(docs)})
    stand_in = StandInMongo(
        uri="mongodb://stand-in.invalid", database=f"db_{uuid.uuid4().hex[:8]}", collection="content_raw"
    )

    assert ingest(folder, DAY, [content], documents=stand_in).success
    assert ingest(folder, DAY, [content], documents=stand_in).success  # a re-run replaces, never duplicates

    stored = list(MOCK_MONGO[stand_in.database]["content_raw"].find({}, {"_id": 0}).sort("content_id"))
    assert [d["content_id"] for d in stored] == ["C001", "C002", "C003", "C004"]
    assert stored[0]["cast"] == docs[0]["cast"] and stored[0]["_dw"] == {"arrival_date": DAY, "collection": "content"}
    assert warehouse.execute("select to_regclass('bronze.content_raw')").fetchone()[0] is None


@pytest.mark.skipif(not os.environ.get("DW_MONGODB_URI"), reason="needs a real MongoDB server: set DW_MONGODB_URI")
def test_raw_documents_reach_a_real_mongodb(folder, warehouse):
    land(folder, DAY, {"content.json": sample.content_file(sample.content_documents(2), malformed=False)})
    real = MongoDocuments(
        uri=os.environ["DW_MONGODB_URI"], database=f"dw_test_{uuid.uuid4().hex[:8]}", collection="content_raw"
    )
    try:
        assert ingest(folder, DAY, [content], documents=real).success
        client = real.client()
        assert client[real.database]["content_raw"].count_documents({"_dw.arrival_date": DAY}) == 2
    finally:
        real.client().drop_database(real.database)


def test_the_file_check_fails_when_the_landed_file_no_longer_matches_bronze(folder, warehouse):
    land(folder, DAY, {"users.csv": sample.to_csv(sample.USERS_HEADER, sample.users(sample.date(2026, 11, 20), 5))})
    assert ingest(folder, DAY, [video_users]).success
    land(folder, DAY, {"users.csv": sample.to_csv(sample.USERS_HEADER, sample.users(sample.date(2026, 11, 20), 9))})

    result = video_checks.video_users_file_readable(
        dg.build_asset_check_context(), warehouse=warehouse_from_env(), video_landing=folder
    )

    assert not result.passed and result.metadata["records_in_file"].value == 10


def test_the_file_check_fails_when_the_file_is_gone(folder, warehouse, tmp_path):
    land(folder, DAY, {"users.csv": sample.to_csv(sample.USERS_HEADER, sample.users(sample.date(2026, 11, 20), 2))})
    assert ingest(folder, DAY, [video_users]).success
    (tmp_path / "landing" / DAY / "users.csv").unlink()

    result = video_checks.video_users_file_readable(
        dg.build_asset_check_context(), warehouse=warehouse_from_env(), video_landing=folder
    )

    assert not result.passed and "not in the landing zone" in result.metadata["problem"].value


def test_the_not_empty_check_fails_for_a_header_only_file(folder, warehouse):
    land(folder, DAY, {"users.csv": sample.to_csv(sample.USERS_HEADER, [])})

    result = ingest(folder, DAY, [video_users])

    assert check_results(result)["video_users_not_empty"] is False


def test_the_all_null_and_expected_columns_checks_fail_on_a_bad_table(folder, warehouse):
    land(
        folder,
        DAY,
        {
            "viewing_sessions.csv": sample.to_csv(
                sample.SESSIONS_HEADER,
                [["S1", "U1", "C1", "", "", "", "", ""], *sample.sessions(sample.date(2026, 11, 20), count=3)],
            )
        },
    )

    result = ingest(folder, DAY, [video_viewing_sessions])
    warehouse.execute("alter table bronze.video_viewing_sessions add column surprise text")
    columns = video_checks.video_viewing_sessions_expected_columns(warehouse=warehouse_from_env())

    assert check_results(result)["video_viewing_sessions_no_all_null_rows"] is False
    assert not columns.passed and columns.metadata["unexpected_columns"].value == "surprise"


# --- files as they arrive in the wild ------------------------------------------------------------


def step_failure(result) -> str:
    return next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").event_specific_data.error.message


def report(zone: LandingZone, path: str) -> dict:
    landing = zone.landing()
    return json.loads(b"".join(landing.chunks(landing.find(path))))


def test_a_record_with_invalid_utf8_and_a_nul_is_quarantined_byte_exact_and_the_rest_loads(folder, warehouse):
    hostile = b"U0099,\xff\x00@example.com,us,basic,2026-01-01,2026-11-20T01:00:00+00:00\r\n"
    good = sample.users(sample.date(2026, 11, 20), 30)
    land(folder, DAY, {"users.csv": sample.to_csv(sample.USERS_HEADER, good) + hostile})

    result = ingest(folder, DAY, [video_users])

    assert result.success and all(check_results(result).values()), check_results(result)
    assert warehouse.execute("select count(*) from bronze.video_users").fetchone()[0] == len(good)
    raw, raw_bytes, reason = warehouse.execute("select raw, raw_bytes, reason from bronze.video_quarantine").fetchone()
    assert bytes(raw_bytes) == hostile and reason == "contains a NUL byte, which PostgreSQL text cannot hold"
    assert raw == "U0099,\ufffd\u2400@example.com,us,basic,2026-01-01,2026-11-20T01:00:00+00:00\u240d\n"


def test_a_compressed_day_file_loads_like_the_plain_one(folder, warehouse):
    from test_compression import COMPRESS

    suffix = ".zst"  # each format's decompression is tested in test_compression.py
    files = sample.sample_files(sample.date.fromisoformat(DAY))
    land(
        folder, DAY, {"users.csv" + suffix: COMPRESS[suffix](files["users.csv"]), "content.json": files["content.json"]}
    )

    result = ingest(folder, DAY, [video_users])

    assert result.success and all(check_results(result).values()), check_results(result)
    assert warehouse.execute("select count(*) from bronze.video_users").fetchone()[0] == 41
    assert warehouse.execute("select source from bronze.batch_ledger").fetchone()[0].endswith(f"users.csv{suffix}")


def test_a_file_that_cannot_be_loaded_goes_to_failed_with_its_report_and_its_day_waits_for_a_new_one(folder, warehouse):
    land(folder, DAY, {"users.csv.gz": b"user_id\r\nU1\r\n"})  # claims gzip; is not

    result = ingest(folder, DAY, [video_users])

    assert not result.success
    assert "users.csv.gz claims gzip compression (its name ends in .gz) but is not compressed" in step_failure(result)
    landing = folder.landing()
    assert [f.path for f in landing.list()] == [f"failed/{DAY}/users.csv.gz", f"failed/{DAY}/users.csv.gz.report.json"]
    assert report(folder, f"failed/{DAY}/users.csv.gz.report.json")["status"] == "failed"

    users = sample.to_csv(sample.USERS_HEADER, sample.users(sample.date(2026, 11, 20), 3))
    land(folder, DAY, {"users.csv.gz": gzip.compress(users)})  # sent again, compressed
    assert ingest(folder, DAY, [video_users]).success
    assert [f.path for f in landing.list()] == [f"{DAY}/users.csv.gz"]  # the failed copy and its report are gone


def test_a_content_array_whose_syntax_breaks_fails_naming_the_line_and_goes_to_failed(folder, warehouse):
    land(folder, DAY, {"content.json": b'[\n  {"content_id": "C1"},\n  {"content_id": "C2",}\n]\n'})

    result = ingest(folder, DAY, [content])

    assert not result.success
    assert "content.json: line 3: not a JSON array: Expecting property name" in step_failure(result)
    assert folder.landing().find(f"failed/{DAY}/content.json") is not None


def test_the_same_file_landed_for_a_second_day_is_refused_unless_identical_files_are_allowed(
    folder, warehouse, monkeypatch
):
    users = sample.to_csv(sample.USERS_HEADER, sample.users(sample.date(2026, 11, 20), 5))
    land(folder, DAY, {"users.csv": users})
    land(folder, NEXT_DAY, {"users.csv": users})
    assert ingest(folder, DAY, [video_users]).success

    again = ingest(folder, NEXT_DAY, [video_users])

    assert not again.success and "holds the same bytes as" in step_failure(again)
    assert warehouse.execute("select arrival_date::text, count(*) from bronze.video_users group by 1").fetchall() == [
        (DAY, 6)
    ]
    refused = report(folder, f"failed/{NEXT_DAY}/users.csv.report.json")
    assert refused["status"] == "identical" and refused["identical_to"]["file"].endswith(f"/{DAY}/users.csv")
    check = video_checks.video_users_no_identical_files(warehouse=warehouse_from_env())
    assert not check.passed and check.metadata["files_refused"].value == 1

    monkeypatch.setenv("DW_VIDEO_ACCEPT_IDENTICAL_FILES", "true")
    rerun = ingest(folder, NEXT_DAY, [video_users])  # reads it from failed/, and puts it back
    assert rerun.success
    assert [name for name, ok in check_results(rerun).items() if not ok] == ["video_users_no_identical_files"]
    assert folder.landing().find(f"{NEXT_DAY}/users.csv") is not None
    assert folder.landing().find(f"failed/{NEXT_DAY}/users.csv.report.json") is None


def test_a_day_file_waiting_too_long_without_a_load_is_reported(folder, warehouse, monkeypatch):
    land(folder, DAY, {"users.csv": sample.to_csv(sample.USERS_HEADER, sample.users(sample.date(2026, 11, 20), 5))})
    land(
        folder, NEXT_DAY, {"users.csv": sample.to_csv(sample.USERS_HEADER, sample.users(sample.date(2026, 11, 21), 5))}
    )
    assert ingest(folder, DAY, [video_users]).success
    monkeypatch.setenv("DW_VIDEO_MAX_WAIT_MINUTES", "0")

    result = video_checks.video_users_files_not_waiting(warehouse=warehouse_from_env(), video_landing=folder)

    assert not result.passed and result.metadata["files_waiting_too_long"].value == 1
    assert result.metadata["longest_waiting"].value.startswith(f"{NEXT_DAY}/users.csv (")


def ingest_range(zone: LandingZone, first: str, last: str):
    """The video bronze and its checks for first..last as one run (a single-run backfill or a catch-up run)."""
    check_defs = [
        getattr(video_checks, n)
        for n in dir(video_checks)
        if isinstance(getattr(video_checks, n), dg.AssetChecksDefinition)
    ]
    return dg.materialize(
        [video_users, video_viewing_sessions, content, *check_defs],
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
        raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral(),
        resources={"warehouse": warehouse_from_env(), "video_landing": zone, "video_documents": MongoDocuments()},
    )


def test_a_range_of_days_loads_each_day_on_its_own_and_a_missing_day_fails_the_run_naming_it(folder, warehouse):
    for day in (DAY, NEXT_DAY):
        land(folder, day, sample.sample_files(sample.date.fromisoformat(day)))

    result = ingest_range(folder, DAY, NEXT_DAY)

    assert result.success and all(check_results(result).values()), check_results(result)
    assert warehouse.execute(
        "select partition_key, count(*) from bronze.batch_ledger where status = 'succeeded' group by 1 order by 1"
    ).fetchall() == [(DAY, 3), (NEXT_DAY, 3)]  # each day its own load of each table
    users = {
        e.partition: e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["bronze", "video_users"])
    }
    assert users[DAY]["dagster/row_count"].value == 41 and users[NEXT_DAY]["dagster/row_count"].value == 41

    third = "2026-11-22"
    land(folder, third, {"users.csv": sample.to_csv(sample.USERS_HEADER, sample.users(sample.date(2026, 11, 22), 2))})
    result = ingest_range(folder, NEXT_DAY, third)

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE" and "content" in e.step_key)
    assert f"{third}: {third}/content.json has not arrived" in failure.step_failure_data.user_failure_data.description
    assert (
        warehouse.execute(
            "select count(*) from bronze.video_users where arrival_date = %s", (sample.date(2026, 11, 22),)
        ).fetchone()[0]
        == 3
    )  # the day's users arrived and are loaded
