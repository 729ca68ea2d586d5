"""The Celery app a worker runs (`celery -A dw_platform.lib.celery_worker worker`, started by
`dw workers`): dagster-celery's step task, with the broker, result backend and settings the
executor uses (`dw_platform.lib.executor`), read from the environment (DW_REDIS_URL)."""

import os

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from dw_platform.lib.executor import REDIS_URL, celery_settings

if not os.environ.get(REDIS_URL):
    raise RuntimeError(f"{REDIS_URL} is not set: a worker needs the Redis the runs submit their steps to")

app = make_app(
    CeleryExecutor.for_cli(
        broker=os.environ[REDIS_URL],
        backend=os.environ[REDIS_URL],
        # Loaded before the worker forks its step process, so each step does not import it again.
        include=["dw_platform.definitions"],
        config_source=celery_settings(),
    ).app_args()
)
execute_plan = create_task(app)
