"""The domain registry (what `dw`, the demo, the embedded services and the tests read) and the
template domain: docs/adding-a-domain.md followed command for command on a throwaway copy of the
project, on the session's real PostgreSQL and Azurite."""

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from dw_platform import domains
from dw_platform.cli import parser
from dw_platform.devenv import embedded
from dw_platform.devenv.new_domain import create

ROOT = embedded.PROJECT_ROOT
WALK_THROUGH = ROOT / "docs" / "adding-a-domain.md"


def test_every_registered_domain_has_its_definitions_demo_step_and_landing_zone():
    for domain in domains.REGISTRY:
        assert (ROOT / "dw_platform" / "defs" / domain.name).is_dir(), domain.name
        assert callable(domain.demo_step()), domain.name
        if domain.landing_zone:
            assert callable(importlib.import_module(domain.landing_zone).drop), domain.name
        assert "postgres" in domain.services, domain.name  # the warehouse
        assert re.fullmatch(r"team:[a-z0-9_-]+", domain.owner), domain.name
    assert domains.services_needed() == set(domains.SERVICES)


def test_every_registered_domain_has_its_page_in_the_docs():
    nav = (ROOT / "mkdocs.yml").read_text()
    for domain in domains.REGISTRY:
        assert (ROOT / "docs" / "domains" / f"{domain.name}.md").is_file(), domain.name
        assert f"domains/{domain.name}.md" in nav, domain.name


def test_the_walk_through_names_every_server_a_domain_can_ask_for():
    text = WALK_THROUGH.read_text()
    assert all(f"`{service}`" in text for service in domains.SERVICES)


def test_the_registry_refuses_a_server_the_embedded_default_cannot_start():
    with pytest.raises(ValueError, match="unknown services"):
        domains.Domain("fleet", "team:fleet", ("postgres", "kafka"), "dw_platform.samples.fleet")


def test_dw_drop_and_dw_demo_offer_the_registered_domains():
    commands = next(a for a in parser()._actions if hasattr(a, "choices") and a.choices and "drop" in a.choices)
    drop = next(a for a in commands.choices["drop"]._actions if a.dest == "domain")
    assert drop.choices == [d.name for d in domains.REGISTRY if d.landing_zone] == ["sales", "video", "softcart"]
    demo = next(a for a in commands.choices["demo"]._actions if a.dest == "domains")
    assert all(name in demo.help for name in domains.DOMAINS)


def test_the_embedded_default_starts_only_the_servers_asked_for(server, monkeypatch):
    """`dw drop sales` needs Azurite, not MariaDB; `dw demo customer` neither (the warehouse is up already)."""
    for name in ("DW_BLOB_CONNECTION_STRING", "DW_SOFTCART_ODBC"):
        monkeypatch.delenv(name)
    with embedded.services(env_file=None, needs=domains.get("customer").services):
        assert "DW_BLOB_CONNECTION_STRING" not in os.environ and "DW_SOFTCART_ODBC" not in os.environ
    with embedded.services(env_file=None, needs=domains.get("sales").services):
        assert "DW_BLOB_CONNECTION_STRING" in os.environ and "DW_SOFTCART_ODBC" not in os.environ


def project_copy(tmp_path: Path) -> Path:
    """The project's files without its environment and state (a fresh clone, set up)."""
    copy = tmp_path / "project"
    shutil.copytree(
        ROOT,
        copy,
        ignore=shutil.ignore_patterns(
            ".venv", ".dw", "node_modules", ".pytest-tmp", ".git", "__pycache__", "logs", "site", "test-results"
        ),
    )
    return copy


def test_dw_new_domain_refuses_a_bad_name_a_bad_owner_and_a_name_in_use(tmp_path):
    copy = tmp_path / "project"
    for part in ("dw_platform/domains.py", ".env.example"):
        (copy / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / part, copy / part)
    shutil.copytree(ROOT / "templates", copy / "templates")
    (copy / "dw_platform" / "lib").mkdir()  # a package of the platform: no domain's engine can go there
    for name, owner, problem in (
        ("Parcels", "team:logistics", "lower-case word"),
        ("parcel_events", "team:logistics", "lower-case word"),
        ("parcels", "logistics", "owner"),
        ("sales", "team:sales-data", "exists already"),
        ("lib", "team:platform", "exists already"),
    ):
        with pytest.raises(ValueError, match=problem):
            create(name, owner, root=copy)
    assert (copy / "dw_platform" / "domains.py").read_text() == (ROOT / "dw_platform" / "domains.py").read_text()
    assert not (copy / "dw_platform" / "defs").exists()


def walk_through() -> tuple[list[list[str]], str, str]:
    """The walk-through's commands, the output it shows for the first, and the demo summary it promises."""
    text = WALK_THROUGH.read_text()
    section = text.split("## Walk-through", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip()[2:].split() for line in section.splitlines() if line.strip().startswith("$ ")]
    shown = re.search(r"```text\n(.*?)```", section, re.DOTALL).group(1)
    summary = re.search(r"The summary ends with\s+`([^`]+)`", section).group(1)
    return commands, "\n".join(line.strip() for line in shown.splitlines()), summary


def test_a_domain_made_from_the_template_as_the_walk_through_says_loads_and_runs(databases, tmp_path):
    commands, shown, summary = walk_through()
    assert [c[:2] for c in commands] == [[".venv/bin/dw", "new-domain"], [".venv/bin/dw", "demo"]]
    name = commands[0][2]
    copy = project_copy(tmp_path)
    # As on a developer's machine with nothing configured: `dw` finds the embedded servers (the
    # session's, under DW_HOME) and fills in the settings; a Dagster home of its own.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DW_PG", "DW_CUSTOMER", "DAGSTER_PG"))},
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "PYTHONPATH": str(copy),  # the copy's dw_platform, not the checkout's
    }

    def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        done = subprocess.run(args, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    created = run(sys.executable, "-m", "dw_platform.cli", *commands[0][1:])
    # The domain's migration takes the project's next number, whatever the walk-through shows.
    numbered = re.compile(r"migrations/\d{4}_")
    assert numbered.sub("migrations/NNNN_", "\n".join(line.strip() for line in created.stdout.splitlines())) == (
        numbered.sub("migrations/NNNN_", shown.strip())
    )
    demo = run(sys.executable, "-m", "dw_platform.cli", *commands[1][1:])
    assert summary in demo.stdout, demo.stdout
    # The template's dbt unit tests (runs leave them to the test suite).
    dbt = [str(Path(sys.executable).parent / "dbt"), "test", "--select", f"test_type:unit,{name}_events"]
    unit = subprocess.run(
        [*dbt, "--project-dir", str(copy / "dbt_project"), "--profiles-dir", str(copy / "dbt_project")],
        env={**os.environ, "DW_PG_DATABASE": databases["warehouse"]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert unit.returncode == 0 and "PASS=1" in unit.stdout, unit.stdout[-3000:]

    # The new domain's assets, checks, job and schedule in the graph, with its group, tag and owner.
    loaded = run(
        sys.executable,
        "-c",
        f"""
import json
from dw_platform.definitions import defs
d = defs()
graph = d.resolve_asset_graph()
assets = {{k.to_user_string(): [graph.get(k).group_name, graph.get(k).tags.get("domain"), graph.get(k).owners]
          for k in graph.get_all_asset_keys() if "{name}" in k.to_user_string()}}
checks = sorted(k.name for k in graph.asset_check_keys if "{name}" in k.asset_key.to_user_string())
job = d.resolve_job_def("{name}_daily")
print(json.dumps({{"assets": assets, "checks": checks, "job": job.name,
                   "schedule": d.resolve_schedule_def("{name}_daily_schedule").job_name}}))
""",
    )
    graph = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert graph["assets"] == {
        f"bronze/{name}_events": [name, name, ["team:logistics"]],
        f"silver/{name}_events": [name, name, ["team:logistics"]],
        f"gold/{name}_daily_summary": [name, name, ["team:logistics"]],
    }
    assert {f"{name}_events_records_reconcile_with_file", f"unique_{name}_events_event_id"} <= set(graph["checks"])
    assert f"assert_{name}_summary_reconciles_with_silver" in graph["checks"]
    assert graph["job"] == graph["schedule"] == f"{name}_daily"

    # What the demo loaded into the real warehouse: two days, three bad records each quarantined.
    with psycopg.connect(
        host=os.environ["DW_PG_HOST"],
        port=os.environ["DW_PG_PORT"],
        user=os.environ["DW_PG_USER"],
        password=os.environ["DW_PG_PASSWORD"],
        dbname=databases["warehouse"],
    ) as conn:
        days, rows = conn.execute(f"select count(distinct arrival_date), count(*) from bronze.{name}_events").fetchone()
        reasons = [r for (r,) in conn.execute(f"select reason from bronze.{name}_quarantine order by reason")]
        silver = conn.execute(f"select count(*), count(distinct event_id) from silver.{name}_events").fetchone()
    assert days == 2 and rows == 2 * (200 + 8)
    assert len(reasons) == 6 and {r.split(":")[0] for r in reasons} == {"event_id", "occurred_at", "amount"}
    assert silver[0] == silver[1] == 2 * 200 + 8  # the second day's 8 repeats of the first day are its latest state
