"""One switch (DW_EXECUTOR) chooses where every job's steps execute; the Celery settings are ones
Celery knows and the executor's config is valid for dagster-celery's own schema."""

import dagster as dg
import pytest
from celery.app.defaults import NAMESPACES, flatten

from dw_platform.lib.executor import celery_settings, executor


def test_steps_run_in_process_unless_celery_is_chosen(monkeypatch):
    monkeypatch.delenv("DW_EXECUTOR", raising=False)
    assert executor() is dg.in_process_executor
    monkeypatch.setenv("DW_EXECUTOR", "in_process")
    assert executor("replication") is dg.in_process_executor


def test_an_unknown_executor_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv("DW_EXECUTOR", "k8s")
    with pytest.raises(ValueError, match="in_process, celery"):
        executor()


def test_every_celery_setting_is_one_celery_knows():
    known = {name for name, _ in flatten(NAMESPACES)}
    assert [name for name in celery_settings() if name not in known] == []


def test_the_celery_executor_config_is_valid_for_dagster_celery_and_sends_steps_to_the_jobs_queue(monkeypatch):
    monkeypatch.setenv("DW_EXECUTOR", "celery")
    monkeypatch.setenv("DW_REDIS_URL", "redis://:secret@127.0.0.1:6379/0")

    @dg.op
    def step():
        pass

    for queue in ("dagster", "replication"):

        @dg.job(executor_def=executor(queue), name=f"on_{queue}")
        def job():
            step()

        name = "celery" if queue == "dagster" else "celery_replication"
        resolved = dg.validate_run_config(job)["execution"][name]  # dagster-celery's schema accepts it
        assert resolved["config_source"]["task_default_queue"] == queue
        assert resolved["broker"] == resolved["backend"] == "redis://:secret@127.0.0.1:6379/0"  # from DW_REDIS_URL


def test_under_celery_every_job_keeps_its_retry_policy_and_replication_steps_go_to_their_own_queue(server, monkeypatch):
    from dw_platform.definitions import defs

    in_process = {job.name: job for job in defs().resolve_all_job_defs()}
    monkeypatch.setenv("DW_EXECUTOR", "celery")
    monkeypatch.setenv("DW_REDIS_URL", "redis://:secret@127.0.0.1:6379/0")
    on_celery = {job.name: job for job in defs().resolve_all_job_defs()}

    assert on_celery.keys() == in_process.keys()
    for name, job in on_celery.items():
        replication = name.startswith(("replication_", "validate_lakehouse"))
        assert job.executor_def.name == ("celery_replication" if replication else "celery"), name
        assert in_process[name].executor_def is dg.in_process_executor, name
        assert job.op_retry_policy == in_process[name].op_retry_policy, name
    assert on_celery["customer_daily"].op_retry_policy.max_retries == 3


def test_a_lost_workers_step_is_looked_for_often_enough_for_its_visibility_timeout(monkeypatch):
    for timeout_s, scan_s in (("30", 5), ("3600", 10)):
        monkeypatch.setenv("DW_CELERY_VISIBILITY_TIMEOUT_S", timeout_s)
        options = celery_settings()["broker_transport_options"]
        assert options["visibility_timeout"] == int(timeout_s)
        # kombu scans every interval x throttle seconds (its default: 10 x 10)
        assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] == scan_s
