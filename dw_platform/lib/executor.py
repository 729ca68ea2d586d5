"""Where a run's steps execute, for every job by one switch: `DW_EXECUTOR=in_process` (the default:
every step in the run's own process, fastest on one machine) or `celery` (each step a task on a
Celery worker, `dw workers`, over Redis: Dagster's own `dagster-celery` executor).

Retry policies and concurrency limits are the jobs' and the instance's, the same under both: a
step's retries are counted by the run, whichever worker ran the attempt, and the run queue's
limits (dagster.yaml) decide which runs start at all.

Celery is set up so that a fault ends a step rather than losing it:
- a task is acknowledged when its step has finished (`task_acks_late`): a worker lost mid-step
  (killed, its machine gone) leaves its step in Redis, and another worker runs it after
  `DW_CELERY_VISIBILITY_TIMEOUT_S` (default 1 h; keep it above the longest step, or a step still
  running is delivered a second time). A step process that dies under a living worker (the OOM
  killer, kill -9) fails the step at once (WorkerLostError) and with it the run, which run retries
  re-execute from the failed step;
- a Redis outage is waited out, not failed on: publishing, reading results and the workers'
  connections retry until Redis is back (queued steps survive its restart: append-only file).
"""

from __future__ import annotations

import os

import dagster as dg

EXECUTORS = ("in_process", "celery")
# dagster-celery's queue: the steps of every job that names no other go there.
DEFAULT_QUEUE = "dagster"
REDIS_URL = "DW_REDIS_URL"  # broker and result backend, e.g. redis://:password@host:6379/0


def executor_name() -> str:
    name = os.environ.get("DW_EXECUTOR", "").strip() or "in_process"
    if name not in EXECUTORS:
        raise ValueError(f"DW_EXECUTOR={name!r} is not an executor here: use one of {', '.join(EXECUTORS)}")
    return name


def celery_settings(queue: str = DEFAULT_QUEUE) -> dict:
    """Celery's settings for the executor (run side) and the workers: one place, so both agree."""
    visibility_timeout = int(os.environ.get("DW_CELERY_VISIBILITY_TIMEOUT_S", "3600"))
    return {
        "task_default_queue": queue,
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout,
            # A worker looks for steps past their visibility timeout every interval (kombu's
            # default: a scan every 10 s x 10 = 100 s): a lost worker's step returns to the queue
            # within a sixth of the timeout after it (at most 10 s), not up to 100 s later.
            "unacked_restore_interval": restore_interval(visibility_timeout),
            "unacked_restore_throttle": 1,
            # publishing a step while Redis is down: retry for about 2 minutes, then fail the run
            "max_retries": 60,
            "interval_start": 0,
            "interval_step": 1,
            "interval_max": 2,
        },
        "task_publish_retry_policy": {"max_retries": 60, "interval_start": 0, "interval_step": 1, "interval_max": 2},
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # reading a step's result (run side) and storing it (worker side) wait out an outage
        "result_backend_always_retry": True,
        "result_backend_max_retries": 120,
        "result_backend_max_sleep_between_retries_ms": 2000,
        "result_expires": 7 * 24 * 3600,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def restore_interval(visibility_timeout: int) -> int:
    """Seconds between the workers' scans for steps to deliver again."""
    return max(1, min(10, visibility_timeout // 6))


def executor(queue: str = DEFAULT_QUEUE) -> dg.ExecutorDefinition:
    """The executor DW_EXECUTOR names; under Celery, the job's steps go to `queue` (workers listen to
    queues: `dw workers N --queues ...`). Celery is imported only when chosen."""
    if executor_name() == "in_process":
        return dg.in_process_executor
    from dagster_celery import celery_executor

    return celery_executor.configured(
        {"broker": {"env": REDIS_URL}, "backend": {"env": REDIS_URL}, "config_source": celery_settings(queue)},
        name="celery" if queue == DEFAULT_QUEUE else f"celery_{queue}",
    )
