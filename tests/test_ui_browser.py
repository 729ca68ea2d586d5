"""The Dagster UI as an operator uses it, in a real browser: Debian's chromium driven by
Playwright against `dagster dev` (webserver, daemon, code server) on the test's own embedded
services and sample data.

Through the page only, it finds every domain's assets in the global lineage; launches the
customer job for one day from the job's page, then seven days as one backfill (one run; the
automation sensor launches nothing after it), and one bronze partition from the asset's
Materialize dialog, each followed to the run page's Success (click-to-Success is printed: a
benchmark figure, not an assertion); finds the bronze asset's link to its code; finds the checks
of a silver and a gold asset, all passed; finds the lakehouse checks of the replication source
(bulk-loaded by the setup, as `dw demo` does) passed, executes them again with Execute all and
finds that run's results passed too; switches the sales sensor on, drops a file into incoming/
(`dw drop`) and follows the run the sensor launched to Success (drop-to-Success is printed, with
where its seconds went: the sensor, the run's start, bronze, dbt); a second `dw dev` on the UI's port stops at once with its message. A missing asset, a failed run or a red check fails it; the screenshot
of every step so far is then written to test-results/ui-<time>/, named in the failure. At the end it
saves the customer domain's lineage, as built, to test-results/asset-graph.png; with
DW_UPDATE_DOCS_IMAGES=1 to docs/assets/asset-graph.png instead, the picture README and the docs
show (run it so and commit the image when the UI changed; a plain `make test` leaves the tree clean).
"""

import os
import re
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
from conftest import load_all

from dw_platform.devenv import embedded
from dw_platform.domains import OWNERS
from dw_platform.samples import customer as customer_sample
from dw_platform.samples import replication as replication_sample
from dw_platform.samples import sales as sales_sample

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUN_TIMEOUT_S = 300
ASSET_GRAPH_PNG = (
    embedded.PROJECT_ROOT
    / ("docs/assets" if os.environ.get("DW_UPDATE_DOCS_IMAGES") == "1" else "test-results")
    / "asset-graph.png"
)


@pytest.fixture(scope="session")
def browser_type_launch_args():
    """pytest-playwright launches the system's chromium (Playwright's own browser download cannot run here)."""
    return {"executable_path": CHROMIUM, "args": FLAGS, "headless": True}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1600, "height": 1200}}


class Journey:
    """The page, the UI's address, and a screenshot after every step (all written out on failure)."""

    def __init__(self, page, base_url: str):
        self.page = page
        self.base_url = base_url
        self.shots: list[tuple[str, bytes]] = []
        # Dagster's first-visit "Join the community" dialog: dismiss it whenever it shows up.
        page.add_locator_handler(
            page.get_by_text("Join the Dagster community"), lambda: page.get_by_role("button", name="Skip").click()
        )

    def open(self, path: str) -> None:
        self.page.goto(self.base_url + path)

    @contextmanager
    def step(self, name: str):
        try:
            yield
        except BaseException as exc:
            self.shots.append((f"{name} (FAILED)", self.page.screenshot(full_page=True)))
            folder = embedded.PROJECT_ROOT / "test-results" / f"ui-{datetime.now():%Y%m%dT%H%M%S}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, (label, png) in enumerate(self.shots, 1):
                (folder / f"{i:02d}-{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')}.png").write_bytes(png)
            raise AssertionError(f"UI step '{name}' failed: {exc}\nscreenshots of every step: {folder}") from exc
        self.shots.append((name, self.page.screenshot(full_page=True)))

    def run_status(self) -> str:
        return self.page.locator(".BaseTag").first.inner_text()  # the run page's first tag is its status

    def wait_for_run_success(self, timeout_s: float = RUN_TIMEOUT_S) -> None:
        """On a run's page: until its status says Success; a failed or canceled run fails at once."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.run_status().strip()
            if status == "Success":
                return
            assert status not in ("Failure", "Canceled"), f"the run ended {status}: {self.page.url}"
            time.sleep(0.25)
        raise AssertionError(f"the run did not succeed within {timeout_s:.0f}s (status {self.run_status()!r})")

    def wait_for_checks_passed(self, asset: str, names: set[str]) -> None:
        """On an asset's checks tab: every check of `names` listed, evaluated and passed (a run the
        automation sensor started may still be at it); a red check fails at once."""
        assert names, f"{asset} has no checks in the code location"
        rows = self.page.locator("[class*=AssetChecks_checkRow]")
        rows.nth(len(names) - 1).wait_for(timeout=60_000)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            # A row: the check's name, then its status (succeeded, failed, in progress, not evaluated, ...).
            statuses = {
                row.locator("[class*=MiddleTruncate_container]").get_attribute("title"): row.inner_text()
                .lower()
                .splitlines()[-1]
                .strip()
                for row in rows.all()
            }
            red = [name for name, status in statuses.items() if "fail" in status or "error" in status]
            assert not red, f"red checks on {asset}: {red}"
            assert set(statuses) == names, (
                f"{asset}: the UI lists {sorted(statuses)}, the code location has {sorted(names)}"
            )
            if all(status in ("succeeded", "passed") for status in statuses.values()):
                return
            assert time.monotonic() < deadline, f"the checks of {asset} did not all pass: {statuses}"
            time.sleep(1)

    def launch_partition(self, partition: str) -> float:
        """In the open Materialize dialog: one partition, launch, follow the toast to the run page
        and wait for Success; returns seconds from the click on Launch to Success."""
        page = self.page
        box = page.get_by_placeholder("No matching partitions")
        box.fill(partition)
        box.press("Enter")
        launch = page.get_by_role("button", name="Launch 1 run")
        clicked = time.monotonic()
        launch.click()
        toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
        run_id = re.search(r"[0-9a-f]{8}", toast.inner_text(timeout=60_000)).group(0)
        self.open("/runs")  # the runs list, newest first
        page.locator(f"a[href^='/runs/{run_id}']").first.click()
        page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
        self.wait_for_run_success()
        return time.monotonic() - clicked, self.page.url.rsplit("/", 1)[-1].split("?")[0]


def run_split(instance: dg.DagsterInstance, run_id: str, since: float | None = None) -> str:
    """Where a run's time went: queued, launching, then each step's start and end, in seconds from
    `since` (a wall-clock time, e.g. the drop of the file a sensor found), else from its enqueue."""
    stats = instance.get_run_stats(run_id)
    t0 = since or stats.enqueued_time or stats.launch_time
    parts = [f"run {run_id[:8]}: launched +{stats.launch_time - t0:.1f}", f"started +{stats.start_time - t0:.1f}"]
    if since:
        parts.insert(0, f"run {run_id[:8]}: queued by the sensor +{stats.enqueued_time - t0:.1f}")
        parts[1] = parts[1].split(": ", 1)[1]
    for step in instance.get_run_step_stats(run_id):
        parts.append(f"{step.step_key} +{step.start_time - t0:.1f}..+{step.end_time - t0:.1f}")
    parts.append(f"ended +{stats.end_time - t0:.1f}")
    return "; ".join(parts)


def expected_assets(definitions: dg.Definitions) -> dict[str, Counter]:
    """Every materializable asset of the code location by group (the domain), as the lineage
    sidebar names them (the last part of the key)."""
    graph = definitions.resolve_asset_graph()
    by_group: dict[str, Counter] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.is_materializable:
            by_group.setdefault(node.group_name, Counter())[key.path[-1]] += 1
    return by_group


def checks_of(definitions: dg.Definitions, asset: str) -> set[str]:
    key = dg.AssetKey(asset.split("/"))
    return {check.name for check in definitions.resolve_asset_graph().asset_check_keys if check.asset_key == key}


@pytest.fixture
def operator_ui(source, storage, replication_source, request):
    """Sample customers in the test's source, then `dagster dev` on the test's databases and container;
    and, as `dw demo` does, a small replication source discovered and bulk-loaded into the lakehouse
    (the load evaluates the lakehouse checks)."""
    customer_sample.seed(source, rows=300, end_date=datetime.now(timezone.utc).date(), days=14)
    replication_sample.seed(replication_source, customer_count=50, product_count=20, order_count=100, audit_count=30)
    ui = request.getfixturevalue("dagster_dev")
    from dw_platform.definitions import defs

    loaded = load_all(defs(), ui.instance)
    assert loaded.success, [e.message for e in loaded.all_events if e.is_failure]
    return ui


def test_an_operator_finds_every_domain_materializes_reads_checks_and_ingests_a_dropped_file(
    operator_ui,
    definitions,
    page,
    tmp_path,
    capsys,
):
    ui = Journey(page, operator_ui.url)
    today = datetime.now(timezone.utc).date()
    job_day, asset_day = (today - timedelta(days=3)).isoformat(), (today - timedelta(days=2)).isoformat()
    expected = expected_assets(definitions)
    assert set(expected) <= set(OWNERS), f"assets outside a domain's group: {set(expected) - set(OWNERS)}"

    with ui.step("global lineage shows every domain's assets"):
        ui.open("/asset-groups")
        sidebar_rows = page.locator("[class*=AssetSidebarNode_itemContainer]")
        sidebar_rows.filter(has=page.get_by_title(sorted(expected)[0], exact=True)).wait_for(timeout=120_000)
        for group in sorted(expected):
            row = sidebar_rows.filter(has=page.get_by_title(group, exact=True))
            row.locator("[aria-label=arrow_drop_down]").click()  # expand the group
            page.wait_for_timeout(500)
            rows = [
                (r.locator("[aria-label=asset_group]").count() > 0, r.locator("[title]").first.get_attribute("title"))
                for r in sidebar_rows.all()
            ]
            start = rows.index((True, group))
            end = next((i for i in range(start + 1, len(rows)) if rows[i][0]), len(rows))
            shown = Counter(title for _, title in rows[start + 1 : end])
            assert shown == expected[group], (
                f"group {group}: the UI shows {dict(shown)}, the code location has {dict(expected[group])}"
            )
            row.locator("[aria-label=arrow_drop_down]").click()  # collapse it again

    with ui.step("customer job for one day, from the job page"):
        ui.open("/locations/dw_platform/jobs/customer_daily")
        page.get_by_role("button", name=re.compile("Materialize all")).click()
        job_seconds, job_run = ui.launch_partition(job_day)

    with ui.step("a 7-day range of customer_daily as one backfill run, and no automation run after it"):
        first, last = (today - timedelta(days=10)).isoformat(), (today - timedelta(days=4)).isoformat()
        ui.open("/locations/dw_platform/jobs/customer_daily")
        page.get_by_role("button", name=re.compile("Materialize all")).click()
        box = page.get_by_placeholder("No matching partitions")
        box.fill(f"[{first}...{last}]")
        box.press("Enter")
        clicked = time.monotonic()
        page.get_by_role("button", name=re.compile(r"^Launch (backfill|1 run)")).click()
        range_tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
        runs = []
        while not runs:  # the backfill daemon launches the one run
            assert time.monotonic() - clicked < 120, "the backfill launched no run within 120 s"
            runs = operator_ui.instance.get_runs(dg.RunsFilter(tags=range_tags))
            time.sleep(0.5)
        (range_run,) = runs
        ui.open(f"/runs/{range_run.run_id}")
        ui.wait_for_run_success()
        range_seconds = time.monotonic() - clicked
        time.sleep(65)  # two ticks of the automation sensor (30 s)
        automation = operator_ui.instance.get_runs(dg.RunsFilter(tags={"dagster/sensor_name": "automation"}))
        assert not automation, f"automation runs after the range run: {[r.run_id for r in automation]}"

    with ui.step("one bronze partition from the asset's Materialize dialog"):
        ui.open("/assets/bronze/customer_profile_raw")
        page.get_by_role("button", name=re.compile("Materialize")).first.click()
        asset_seconds, asset_run = ui.launch_partition(asset_day)

    with ui.step("a bronze asset links to its code"):
        ui.open("/assets/bronze/customer_profile_raw")  # Overview: "Source code", "Open assets.py in editor"
        page.get_by_text("Source code", exact=True).first.wait_for(timeout=60_000)
        page.locator("a[href*='dw_platform/defs/customer/assets.py']").first.wait_for(timeout=60_000)

    for asset in ("silver/customer_profile_standardized", "gold/dim_customer_profile"):
        with ui.step(f"checks of {asset}"):
            ui.open(f"/assets/{asset}?view=checks")
            ui.wait_for_checks_passed(asset, checks_of(definitions, asset))

    lakehouse = "bronze/lakehouse/source_app"
    with ui.step(f"checks of {lakehouse}: evaluated by the bulk load, then executed again from the UI"):
        ui.open(f"/assets/{lakehouse}?view=checks")
        names = checks_of(definitions, lakehouse)
        ui.wait_for_checks_passed(lakehouse, names)
        page.get_by_role("button", name="Execute all").click()
        toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
        short_id = re.search(r"[0-9a-f]{8}", toast.inner_text(timeout=60_000)).group(0)
        ui.open("/runs")
        page.locator(f"a[href^='/runs/{short_id}']").first.click()
        page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
        ui.wait_for_run_success()
        checks_run = page.url.rsplit("/", 1)[-1].split("?")[0]
        evaluated = {
            e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
            for e in operator_ui.instance.all_logs(checks_run, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
            for e in [e.dagster_event]
        }
        assert evaluated == dict.fromkeys(names, True), f"the checks run {checks_run} evaluated {evaluated}"
        ui.open(f"/assets/{lakehouse}?view=checks")
        ui.wait_for_checks_passed(lakehouse, names)

    with ui.step("sales sensor switched on, a dropped file ingested by the run it launched"):
        ui.open("/locations/dw_platform/sensors/sales_incoming_sensor")
        page.locator("label", has=page.get_by_role("checkbox")).first.click()  # the "Running" switch
        assert page.get_by_role("checkbox").first.is_checked()
        orders = tmp_path / "orders_ui.csv"
        orders.write_bytes(
            sales_sample.to_csv(sales_sample.HEADER, list(sales_sample.rows(20, today, seed=5, first_id=9001)))
        )
        dropped = subprocess.run(
            [sys.executable, "-m", "dw_platform.cli", "drop", "sales", str(orders)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert dropped.returncode == 0, dropped.stderr
        drop_done, dropped_at = time.monotonic(), time.time()
        page.get_by_role("button", name="Runs", exact=True).click()  # the sensor's runs
        run_link = page.locator("a[href*='/runs/']").filter(has_text=re.compile(r"^[0-9a-f]{8}$")).first
        run_link.wait_for(timeout=120_000)  # the sensor ticks every 5 s
        run_link.click()
        ui.wait_for_run_success()
        drop_seconds = time.monotonic() - drop_done
        drop_run = page.url.rsplit("/", 1)[-1].split("?")[0]

    with ui.step("a second `dw dev` on the UI's port stops at once, saying how to choose another"):
        port = int(operator_ui.url.rsplit(":", 1)[1])
        second = subprocess.run(
            [sys.executable, "-m", "dw_platform.cli", "dev", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr
        assert f"port {port} on 127.0.0.1 is already in use" in second.stderr
        assert f"make dev PORT={port + 1}" in second.stderr

    with ui.step("the customer domain's lineage, saved for the docs"):
        ui.open("/locations/dw_platform/asset-groups/customer")
        page.get_by_text("fact_customer_profile_audit", exact=True).first.wait_for(timeout=60_000)
        # Each node loads its latest materialization and checks after the graph is drawn.
        loading = page.get_by_text(re.compile(r"^Loading"))
        deadline = time.monotonic() + 120
        while loading.count() and time.monotonic() < deadline:
            time.sleep(0.5)
        page.wait_for_timeout(1_000)
        ASSET_GRAPH_PNG.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=ASSET_GRAPH_PNG)

    with capsys.disabled():
        print(
            f"\nUI click-to-Success: customer_daily, one partition {job_seconds:.1f} s; "
            f"bronze/customer_profile_raw, one partition {asset_seconds:.1f} s; customer_daily, 7 days as "
            f"one backfill run {range_seconds:.1f} s; a dropped sales file (20 rows) to its run's Success "
            f"{drop_seconds:.1f} s (the sensor ticks every 5 s)"
        )
        for run_id in (job_run, asset_run, range_run.run_id):
            print(run_split(operator_ui.instance, run_id))
        print(
            f"dropped sales file, seconds from the drop: {run_split(operator_ui.instance, drop_run, since=dropped_at)}; "
            f"Success on the run page +{drop_seconds:.1f}"
        )
