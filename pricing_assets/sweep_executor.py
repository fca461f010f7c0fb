"""Where the sweep's steps run: in the run's own process (the default), on Celery workers, or in pods.

`SWEEP_EXECUTOR` picks it when the code location loads, and every process that loads the location
must see the same value: the code server, the run worker, and each Celery worker.

- unset or `in_process`: the steps run one after another in the run worker (docs/decisions.md, "The
  sweep: few large in-process runs").
- `celery`: dagster-celery's executor (the `celery` dependency group). The run worker sends each step
  to the queue `CELERY_QUEUE` (default `dagster`) on the broker `CELERY_BROKER_URL`; workers started
  with `dagster-celery worker start -y deploy/celery/celery.yaml -q <queue>` run them. Steps hand
  their outputs over through the warehouse, so it must be storage every worker reaches
  (`WAREHOUSE_DIR=s3://...`), and the instance must be one every worker writes to (PostgreSQL,
  `deploy/postgres/dagster.yaml`). docs/deploy.md, "The sweep on Celery workers".
- `k8s`: dagster-k8s's `k8s_job_executor` (the `k8s` dependency group), every step in its own pod;
  `deploy/k8s/sweep-k8s-executor.yaml` is its run config (docs/deploy.md, "Per-step pods for the
  sweep").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dagster import ExecutorDefinition, in_process_executor

from resources.config import ConfigError

SWEEP_EXECUTOR_ENV = "SWEEP_EXECUTOR"
CELERY_BROKER_ENV = "CELERY_BROKER_URL"
CELERY_QUEUE_ENV = "CELERY_QUEUE"
DEFAULT_CELERY_QUEUE = "dagster"  # dagster-celery's own default queue
# The rpc:// backend gives each run worker a reply queue it polls (basic.get, never a consumer), so the
# broker's auto-delete never removes it: it goes when it has been idle this long (Celery's default, a
# day, kept one per run, 288 a day at one sweep every 5 minutes). The run polls it every second until
# its last step is back, so a few minutes idle means the run is over. Only the run declares it; the
# workers just publish to it, so their config need not say the same.
REPLY_QUEUE_IDLE_SECONDS = 300


def celery_executor_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """The celery_executor's config for this environment. The broker stays an env reference, resolved
    when the run starts: its URL carries the broker's password."""
    if not environ.get(CELERY_BROKER_ENV):
        raise ConfigError(
            f"{SWEEP_EXECUTOR_ENV}=celery needs {CELERY_BROKER_ENV}, the broker the workers listen on "
            "(e.g. pyamqp://user:password@rabbitmq:5672//)"
        )
    return {
        "broker": {"env": CELERY_BROKER_ENV},
        "backend": "rpc://",  # results come back over the broker: nothing else to run
        "config_source": {
            "task_default_queue": environ.get(CELERY_QUEUE_ENV) or DEFAULT_CELERY_QUEUE,
            "result_expires": REPLY_QUEUE_IDLE_SECONDS,
        },
    }


def sweep_executor(environ: Mapping[str, str] | None = None) -> ExecutorDefinition:
    """The executor of the sweep jobs, as SWEEP_EXECUTOR says."""
    environ = os.environ if environ is None else environ
    name = environ.get(SWEEP_EXECUTOR_ENV) or "in_process"
    if name == "in_process":
        return in_process_executor
    if name == "celery":
        config = celery_executor_config(environ)
        try:
            from dagster_celery import celery_executor
        except ImportError as exc:
            raise ConfigError(
                f"{SWEEP_EXECUTOR_ENV}=celery needs dagster-celery (install the `celery` dependency group)"
            ) from exc
        return celery_executor.configured(config, name="celery")
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise ConfigError(
                f"{SWEEP_EXECUTOR_ENV}=k8s needs dagster-k8s (install the `k8s` dependency group)"
            ) from exc
        return k8s_job_executor
    raise ConfigError(f"{SWEEP_EXECUTOR_ENV}={name!r}: expected 'in_process', 'celery' or 'k8s'")
