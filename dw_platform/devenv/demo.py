"""`dw demo`: each domain's demo step, run in order, with one progress line per stage.

A domain owns its step (`demo(session)` in its samples module, named in the domain registry
`dw_platform/domains.py`, beside its sample data): it seeds its sample source, runs its jobs through `session.run_job` and returns a
`DemoOutcome` with its summary lines. The detail (Dagster's and dbt's logs, tracebacks of the
failures a demo causes on purpose) goes to a log file under `.dw/`; the console shows progress and
the summary, which names the log.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import dagster as dg

from dw_platform import domains
from dw_platform.devenv.runs import run_job


@dataclass
class DemoOutcome:
    """What a domain's demo step reports: whether it went as intended, and its summary lines."""

    ok: bool
    lines: list[str] = field(default_factory=list)
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)

    def add_checks(self, result: dg.ExecuteInProcessResult, label: str = "") -> None:
        for evaluation in result.get_asset_check_evaluations():
            if evaluation.passed:
                self.checks_passed += 1
            else:
                where = f" ({label})" if label else ""
                self.checks_failed.append(
                    f"FAILED [{evaluation.severity.value}] {evaluation.asset_key.to_user_string()} :: "
                    f"{evaluation.check_name}{where}"
                )


class DemoSession:
    """The code location, the Dagster instance and the console of one `dw demo`."""

    def __init__(self, definitions: dg.Definitions, instance: dg.DagsterInstance, log_path: Path, console: TextIO):
        self.definitions = definitions
        self.instance = instance
        self.log_path = log_path
        self.console = console

    def stage(self, text: str) -> None:
        """One progress line on the console (and in the log)."""
        print(text, file=self.console, flush=True)
        print(f"== {text}", flush=True)

    def run_job(self, name: str, **kwargs) -> dg.ExecuteInProcessResult:
        """Run a job of the code location through the executor DW_EXECUTOR chooses (in this
        process, or its steps on Celery workers), its logs going to the log file."""
        return run_job(
            name,
            self.instance,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            definitions=self.definitions,
            **kwargs,
        )


def failure_reason(result: dg.ExecuteInProcessResult) -> str:
    """The description of a run's first step failure, for a summary line."""
    failure = next((e for e in result.all_events if e.event_type_value == "STEP_FAILURE"), None)
    data = failure.step_failure_data.user_failure_data if failure else None
    return data.description if data and data.description else "see the log"


@contextmanager
def output_to(log_path: Path) -> Iterator[TextIO]:
    """Send everything written to stdout/stderr (this process and its children, such as dbt) to
    `log_path`; yields a stream to the real console."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(1), "w", buffering=1)
    with open(log_path, "w", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield console
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            console.close()


def run_all(
    definitions: dg.Definitions, instance: dg.DagsterInstance, log_path: Path, names: tuple[str, ...] = domains.DOMAINS
) -> int:
    """Run the demo step of each domain in `names`, in that order (by default every registered
    domain); print the summary; 0 when all went as intended."""
    outcomes: dict[str, DemoOutcome] = {}
    with output_to(log_path) as console:
        session = DemoSession(definitions, instance, log_path, console)
        for domain in names:
            try:
                outcomes[domain] = domains.get(domain).demo_step()(session)
            except Exception as exc:  # one domain's broken demo must not hide the others' results
                import traceback

                traceback.print_exc()
                outcomes[domain] = DemoOutcome(False, [f"demo step failed: {exc}"])
                session.stage(f"{domain}: the demo step failed: {exc}")
    print()
    for domain, outcome in outcomes.items():
        status = "ok" if outcome.ok else "FAILED"
        print(f"{domain} [{status}] - checks: {outcome.checks_passed} passed, {len(outcome.checks_failed)} failed")
        for line in outcome.lines + outcome.checks_failed:
            print(f"  {line}")
    return 0 if all(o.ok for o in outcomes.values()) else 1
