"""The video job end to end on real PostgreSQL and the real dbt project: a small dataset whose
silver rows and gold KPIs are worked out by hand below, and the dbt checks failing on bad data."""

import json
from decimal import Decimal

import dagster as dg
import pytest

from dw_platform.lib.dbt import DBT_PROJECT, DbtCli
from dw_platform.samples import video as sample

DAY1, DAY2 = "2026-11-20", "2026-11-21"
USERS_DAY1 = [
    ["U1", "ann@example.com", "us", "Premium", "2025-01-05", "2026-11-20T01:00:00+00:00"],
    ["U2", "bob@example.com", "de", " basic ", "2025/02/10", "2026-11-20T01:00:00+00:00"],
    ["U3", "", "", "", "", "2026-11-20T01:00:00+00:00"],
    ["U1", "ann@example.com", "DE", "basic", "2025-01-05", "2026-11-20T02:00:00+00:00"],  # later: wins
]
USERS_DAY2 = [["U2", "bob@example.com", "DE", "STANDARD", "2025-02-10", "2026-11-21T01:00:00+00:00"]]
SESSIONS_DAY1 = [
    ["S1", "U1", "C1", "Mobile", "us", "2026-11-20 10:00:00", "600", "100"],
    ["S2", "U1", "C2", " TV ", "us", "2026-11-20T11:00:00+00:00", "300", "50"],
    ["S3", "U2", "C1", "tv", "de", "2026-11-20 12:00:00", "540", "90"],
]
SESSIONS_DAY2 = [
    ["S4", "U2", "C1", "Desktop", "DE", "2026-11-21 09:00:00", "60", ""],  # completion unknown
    ["S1", "U1", "C1", "mobile", "US", "2026-11-20 10:00:00", "660", "100"],  # a correction: wins
]
CONTENT = [
    {
        "content_id": "C1",
        "title": "Alpha",
        "type": "Movie",
        "release": {"year": 2020},
        "runtime_minutes": 11,
        "genres": ["drama", "Crime"],
        "cast": [{"name": "A", "role": "lead"}],
        "ratings": {"imdb": 7.5, "rotten_tomatoes": 80},
        "availability": {"us": True},
    },
    {
        "content_id": "C2",
        "title": "Beta",
        "type": "series",
        "release": {"year": 2021},
        "runtime_minutes": 10,
        "genres": ["Comedy"],
        "cast": [{"name": "B", "role": "lead"}],
        "ratings": {"imdb": 6.0, "rotten_tomatoes": 60},
        "availability": {"us": False},
    },
    {
        "content_id": "C3",
        "title": "Gamma",
        "type": "movie",
        "release": {"year": 2022},
        "runtime_minutes": 12,
        "genres": [],
        "cast": [],
        "ratings": {"imdb": 5.0, "rotten_tomatoes": 50},
        "availability": {"us": True},
    },
]


@pytest.fixture
def landing(tmp_path, databases, monkeypatch):
    """A local landing folder named in DW_VIDEO_LANDING_DIR (the code location reads it). The
    catalog (content.json) is the same every day here, as a full snapshot that did not change is:
    loaded every day by default (DW_VIDEO_ACCEPT_IDENTICAL_FILES unset)."""
    folder = tmp_path / "video_landing"
    monkeypatch.setenv("DW_VIDEO_LANDING_DIR", str(folder))
    monkeypatch.delenv("DW_VIDEO_ACCEPT_IDENTICAL_FILES", raising=False)
    return folder


def land(folder, day, users, sessions, content=CONTENT):
    (folder / day).mkdir(parents=True, exist_ok=True)
    (folder / day / "users.csv").write_bytes(sample.to_csv(sample.USERS_HEADER, users))
    (folder / day / "viewing_sessions.csv").write_bytes(sample.to_csv(sample.SESSIONS_HEADER, sessions))
    (folder / day / "content.json").write_text(json.dumps(content))


def run(day: str) -> dg.ExecuteInProcessResult:
    from dw_platform.definitions import defs

    return (
        defs()
        .resolve_job_def("video_daily")
        .execute_in_process(partition_key=day, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    )


def failed_checks(result) -> set[str]:
    return {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}


def dbt_test(select: str) -> bool:
    """Run one dbt test on its own (as the UI's "execute check" would); True when it passes."""
    invocation = DbtCli(project_dir=DBT_PROJECT).cli(["test", "--select", select], raise_on_error=False)
    invocation.wait()
    return invocation.is_successful()


def test_two_days_build_deduped_silver_and_hand_checked_gold_kpis(landing, warehouse):
    land(landing, DAY1, USERS_DAY1, SESSIONS_DAY1)
    land(landing, DAY2, USERS_DAY2, SESSIONS_DAY2)

    first, second = run(DAY1), run(DAY2)

    assert first.success and second.success
    assert failed_checks(second) == set()
    materialized = {e.asset_key.to_user_string() for e in second.get_asset_materialization_events()}
    assert {
        "silver/video_viewing_sessions",
        "gold/video_user_engagement",
        "gold/video_content_performance",
    } <= materialized
    users = warehouse.execute(
        "select user_id, email, country_code, subscription_tier, signup_date::text"
        " from silver.video_users order by user_id"
    ).fetchall()
    assert users == [
        ("U1", "ann@example.com", "DE", "basic", "2025-01-05"),
        ("U2", "bob@example.com", "DE", "standard", "2025-02-10"),
        ("U3", None, "unknown", "unknown", None),
    ]
    sessions = warehouse.execute(
        "select session_id, device, country_code, started_at = %s::timestamptz, session_date::text, watch_seconds,"
        " completion_pct, is_completed from silver.video_viewing_sessions order by session_id",
        ("2026-11-20 10:00:00+00",),
    ).fetchall()
    assert sessions == [
        ("S1", "mobile", "US", True, DAY1, Decimal(660), Decimal(100), True),
        ("S2", "tv", "US", False, DAY1, Decimal(300), Decimal(50), False),
        ("S3", "tv", "DE", False, DAY1, Decimal(540), Decimal(90), True),
        ("S4", "desktop", "DE", False, DAY2, Decimal(60), None, None),
    ]
    engagement = warehouse.execute(
        "select user_id, session_date::text, sessions, watch_seconds, completed_sessions, completion_rate_pct"
        " from gold.video_user_engagement order by user_id, session_date"
    ).fetchall()
    assert engagement == [
        ("U1", DAY1, 2, Decimal(960), 1, Decimal("50.00")),
        ("U2", DAY1, 1, Decimal(540), 1, Decimal("100.00")),
        ("U2", DAY2, 1, Decimal(60), 0, None),
    ]
    statistics = warehouse.execute(
        "select session_date::text, device, country_code, sessions, unique_viewers, watch_seconds, avg_completion_pct"
        " from gold.video_viewing_statistics order by 1, 2, 3"
    ).fetchall()
    assert statistics == [
        (DAY1, "mobile", "US", 1, 1, Decimal(660), Decimal("100.00")),
        (DAY1, "tv", "DE", 1, 1, Decimal(540), Decimal("90.00")),
        (DAY1, "tv", "US", 1, 1, Decimal(300), Decimal("50.00")),
        (DAY2, "desktop", "DE", 1, 1, Decimal(60), None),
    ]
    performance = warehouse.execute(
        "select content_id, title, views, unique_viewers, watch_seconds, avg_completion_pct, views_rank"
        " from gold.video_content_performance order by views_rank"
    ).fetchall()
    assert performance == [
        ("C1", "Alpha", 3, 2, Decimal(1260), Decimal("95.00"), 1),
        ("C2", "Beta", 1, 1, Decimal(300), Decimal("50.00"), 2),
        ("C3", "Gamma", 0, 0, Decimal(0), None, 3),
    ]
    genres = warehouse.execute("select content_id, genre from silver.video_content_genres order by 1, 2").fetchall()
    assert genres == [("C1", "Crime"), ("C1", "Drama"), ("C2", "Comedy")]


def test_bad_silver_values_fail_their_dbt_checks(landing, warehouse):
    bad_sessions = [
        *SESSIONS_DAY1,
        ["S5", "U404", "C1", "tv", "us", "2026-11-20 13:00:00", "10", "10"],  # unknown user
        ["S6", "U1", "C404", "tv", "us", "2026-11-20 14:00:00", "10", "10"],  # unknown content
        ["S7", "U1", "C1", "tv", "us", "20.11.2026 noon", "10", "10"],  # not a timestamp
        ["S8", "U1", "C1", "tv", "us", "2026-11-20 15:00:00", "-5", "150"],  # out of range
        ["S9", "U1", "C1", "tv", "us", "2026-11-20 16:00:00", "10", "most"],  # not a number
    ]
    land(landing, DAY1, USERS_DAY1, bad_sessions)

    result = run(DAY1)

    assert not result.success
    assert {
        "relationships_video_viewing_sessions_user_id__user_id__ref_video_users_",
        "relationships_video_viewing_sessions_content_id__content_id__ref_video_content_",
        "not_null_video_viewing_sessions_started_at",
        "assert_video_sessions_values_in_range",
        "assert_video_sessions_numbers_parse",
    } <= failed_checks(result), failed_checks(result)


def test_gold_checks_fail_when_gold_no_longer_reconciles_with_silver(landing, warehouse):
    land(landing, DAY1, USERS_DAY1, SESSIONS_DAY1)
    assert run(DAY1).success
    assert dbt_test("assert_video_engagement_reconciles_with_silver")

    warehouse.execute("update gold.video_user_engagement set sessions = sessions + 1 where user_id = 'U1'")
    warehouse.execute("update gold.video_viewing_statistics set sessions = sessions + 1 where device = 'mobile'")
    warehouse.execute(
        "update gold.video_content_performance set avg_completion_pct = 140, views = -1 where content_id = 'C2'"
    )

    assert not dbt_test("assert_video_engagement_reconciles_with_silver")
    assert not dbt_test("assert_video_statistics_reconcile_with_silver")
    assert not dbt_test("assert_video_content_performance_reconciles_with_silver")
    assert not dbt_test("assert_video_gold_metrics_not_negative_and_rates_at_most_100")


def test_silver_key_and_category_checks_fail_on_a_duplicate_key_and_an_unlisted_device(landing, warehouse):
    land(landing, DAY1, USERS_DAY1, SESSIONS_DAY1)
    assert run(DAY1).success
    assert dbt_test("unique_video_users_user_id")

    warehouse.execute("insert into silver.video_users select * from silver.video_users where user_id = 'U1'")
    warehouse.execute("update silver.video_viewing_sessions set device = 'vcr' where session_id = 'S1'")

    assert not dbt_test("unique_video_users_user_id")
    assert not dbt_test("video_viewing_sessions,test_name:accepted_values")


def test_the_user_date_check_fails_on_a_date_that_does_not_parse_and_only_then(landing, warehouse):
    users = [
        *USERS_DAY1,
        ["U5", "eve@example.com", "fr", "free", "2025-03-01", "2026-11-20T01:00:00+00:00"],
        ["U5", "eve@example.com", "fr", "free", "", "2026-11-20T02:00:00+00:00"],
    ]  # later, no date: fine
    land(landing, DAY1, users, SESSIONS_DAY1)
    assert run(DAY1).success
    assert dbt_test("assert_video_users_dates_parse")

    land(
        landing,
        DAY2,
        [["U6", "fay@example.com", "br", "free", "31.02.2025", "2026-11-21T01:00:00+00:00"]],
        SESSIONS_DAY2,
    )
    result = run(DAY2)

    assert "assert_video_users_dates_parse" in failed_checks(result)
    assert warehouse.execute("select signup_date from silver.video_users where user_id = 'U6'").fetchone() == (None,)
