"""The sweep on Celery workers gives the same tables as the sweep in one process (dagster-celery).

Two workers (`dagster-celery worker start`), each its own process group in its own working directory
with its own DAGSTER_HOME, share with each other and with the run only what a deployment shares:
RabbitMQ (a queue of this test's own), PostgreSQL (the instance, in a database of this test's own)
and S3 (the warehouse, on the moto server; steps hand their outputs to each other through it). The
run is `dagster job execute` of price_sweep_job over every catalog batch with SWEEP_EXECUTOR=celery.
The reference is the same command at the same time on the single-machine setup (in-process executor,
the repository's SQLite instance config) into another prefix, on the same inputs: the catalog and the
file supplier's cached file are materialized once and copied to both prefixes, and the REST suppliers
are the seeded sandbox, which answers the same calls the same way.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterEvent, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from polars.testing import assert_frame_equal

from bench import _procfs as procfs
from pricing_assets.sweep import RANGE_END_TAG, RANGE_START_TAG, SWEEP_JOB_NAME
from resources.config import load_registry
from tests.conftest import BUCKET, SANDBOX_ENV, keys_under, s3_env

pytestmark = [pytest.mark.distributed, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INSTANCE_CONFIG = ROOT / "deploy" / "postgres" / "dagster.yaml"
WORKER_CONFIG = ROOT / "deploy" / "celery" / "celery.yaml"
LOCATION = ["-m", "pricing_assets.definitions", "-a", "defs"]
WORKERS = 2
SWEEP_TAG = "test/sweep"  # which of the two sweeps a run is
# The one column two sweeps of the same inputs legitimately differ in: when the supplier was asked
# (supplier_offers and the quarantine tables; the file supplier's rows keep the file's time, and so
# are equal anyway).
FETCH_TIME = "fetched_at"
RUN_TIMEOUT = 240


@pytest.fixture
def celery_queue(broker_url: str) -> Iterator[str]:
    """A queue name of this test's own (parallel runs never take each other's steps), deleted after."""
    from amqp.exceptions import NotFound
    from kombu import Connection

    name = f"sweep-test-{uuid.uuid4().hex[:10]}"
    yield name
    with Connection(broker_url, connect_timeout=5) as conn, contextlib.suppress(NotFound):
        conn.default_channel.queue_delete(name)


@pytest.fixture
def pg_instance(
    tmp_path: Path, pg_database, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[DagsterInstance, str]]:
    """The instance every process of the test shares (a fresh PostgreSQL database), and its URL for
    DAGSTER_PG_URL. Opening it here creates its tables once, before any other process connects."""
    url = pg_database.set(drivername="postgresql").render_as_string(hide_password=False)
    monkeypatch.setenv("DAGSTER_PG_URL", url)
    instance = DagsterInstance.from_config(str(workdir(tmp_path, "test") / "home"))
    yield instance, url
    instance.dispose()


@pytest.fixture
def process_groups() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes the test starts, each leading its own process group. At the end each group gets
    SIGTERM (a Celery worker's warm shutdown) and up to 20 s to exit, then SIGKILL for whatever is
    left, by the recorded pid."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        while group_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the worker's celery process and its pool
        process.wait(timeout=10)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    return [entry.pid for entry in procfs.table().values() if entry.pgid == pgid and entry.state != "Z"]


def workdir(tmp_path: Path, name: str, instance_config: Path = INSTANCE_CONFIG) -> Path:
    """A process's own working directory, with its own DAGSTER_HOME holding `instance_config`."""
    folder = tmp_path / name
    (folder / "home").mkdir(parents=True)
    shutil.copyfile(instance_config, folder / "home" / "dagster.yaml")
    return folder


def log_tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def start(
    started: list[subprocess.Popen[bytes]], folder: Path, env: dict[str, str], *command: str
) -> subprocess.Popen[bytes]:
    """`command` in `folder` with DAGSTER_HOME=folder/home, in its own process group, output in
    folder/out.log; recorded in `started` for the teardown."""
    with (folder / "out.log").open("ab") as sink:
        process = subprocess.Popen(
            list(command),
            cwd=folder,
            env={**env, "DAGSTER_HOME": str(folder / "home")},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started.append(process)
    return process


def finish(process: subprocess.Popen[bytes], folder: Path) -> None:
    """Wait (bounded) for a `dagster` command; it must succeed."""
    try:
        process.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(
            f"{folder.name}: not done in {RUN_TIMEOUT} s:\n{log_tail(folder / 'out.log')}"
        ) from None
    assert process.returncode == 0, f"{folder.name} failed:\n{log_tail(folder / 'out.log')}"


def sweep_command(name: str, batches: list[str]) -> list[str]:
    """price_sweep_job over every batch, as the price_sweep sensor launches it (range tags)."""
    tags = {RANGE_START_TAG: batches[0], RANGE_END_TAG: batches[-1], SWEEP_TAG: name}
    return [
        str(BIN / "dagster"),
        "job",
        "execute",
        *LOCATION,
        "-j",
        SWEEP_JOB_NAME,
        "--tags",
        json.dumps(tags),
    ]


def wait_for_workers(broker_url: str, workers: dict[str, subprocess.Popen[bytes]], logs: dict[str, Path]):
    """Until every worker answers a ping over the broker (by then it consumes its queue)."""
    from celery import Celery

    app = Celery(broker=broker_url)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for name, process in workers.items():
                assert process.poll() is None, f"worker {name} exited:\n{log_tail(logs[name])}"
            replies = app.control.ping(destination=list(workers), timeout=1.0)
            if {node for reply in replies for node in reply} == set(workers):
                return
        raise AssertionError(f"workers not ready within 120 s:\n{log_tail(next(iter(logs.values())))}")
    finally:
        app.close()


def object_key(root: str, key: str) -> str:
    """The bucket key of `key` under an s3://bucket/prefix warehouse root."""
    return f"{root.removeprefix(f's3://{BUCKET}/')}/{key}"


def read_object(client, root: str, key: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=object_key(root, key))["Body"].read()


def sweep_events(instance: DagsterInstance, name: str) -> list[DagsterEvent]:
    """The events of the one sweep run tagged `name`, which must have succeeded."""
    (run,) = instance.get_runs(RunsFilter(job_name=SWEEP_JOB_NAME, tags={SWEEP_TAG: name}))
    assert run.status == DagsterRunStatus.SUCCESS, (name, run.status)
    return [record.dagster_event for record in instance.all_logs(run.run_id) if record.dagster_event]


def test_the_sweep_on_celery_workers_equals_the_sweep_in_one_process(
    broker_url, tmp_path, sandbox, s3_endpoint, bucket, pg_instance, celery_queue, process_groups, monkeypatch
):
    instance, pg = pg_instance
    registry = load_registry()
    batches = [f"batch-{index:03d}" for index in range(registry.catalog_batches)]
    prefix = f"s3://{BUCKET}/distributed-{uuid.uuid4().hex[:8]}"
    roots = {"local": f"{prefix}/local", "celery": f"{prefix}/celery"}
    env = {
        **os.environ,
        **SANDBOX_ENV,
        **s3_env(s3_endpoint),
        "SANDBOX_URL": sandbox.url,
        "DAGSTER_PG_URL": pg,
        "PYTHONPATH": str(ROOT),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # dagster-celery starts `celery` from it
        "SWEEP_EXECUTOR": "in_process",
    }
    celery_env = {
        **env,
        "WAREHOUSE_DIR": roots["celery"],
        "SWEEP_EXECUTOR": "celery",
        "CELERY_BROKER_URL": broker_url,
        "CELERY_QUEUE": celery_queue,
    }

    # The workers start while the inputs are made.
    host = socket.gethostname()
    workers: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    for number in range(1, WORKERS + 1):
        name, folder = f"{celery_queue}-{number}", workdir(tmp_path, f"worker-{number}")
        workers[f"{name}@{host}"] = start(
            process_groups,
            folder,
            celery_env,
            str(BIN / "dagster-celery"),
            *("worker", "start", "-A", "dagster_celery.app", "-y", str(WORKER_CONFIG)),
            *("-q", celery_queue, "-n", name, "-i", "pricing_assets.definitions"),
            # One step at a time each, so the two workers' share of the steps shows.
            *("--", "--concurrency=1", "--without-gossip", "--without-mingle"),
        )
        logs[f"{name}@{host}"] = folder / "out.log"

    # Inputs: the catalog and the file suppliers' cached files, made once, the same objects in both.
    setup = workdir(tmp_path, "setup")
    files = [f"supplier_files/{entry.id}" for entry in registry.suppliers if entry.kind == "cdn_file"]
    materialize = [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        *LOCATION,
        "--select",
        ",".join(["catalog", *files]),
    ]
    finish(start(process_groups, setup, {**env, "WAREHOUSE_DIR": roots["local"]}, *materialize), setup)
    for key in keys_under(bucket, roots["local"]):
        source = {"Bucket": BUCKET, "Key": object_key(roots["local"], key)}
        bucket.copy_object(Bucket=BUCKET, CopySource=source, Key=object_key(roots["celery"], key))

    # The two sweeps at once: the reference on the single-machine setup (the repository's dagster.yaml,
    # SQLite in its own DAGSTER_HOME, so no pool of the Celery run's instance is shared), the other
    # through the workers.
    wait_for_workers(broker_url, workers, logs)
    local_run = workdir(tmp_path, "local-run", ROOT / "dagster.yaml")
    celery_run = workdir(tmp_path, "celery-run")
    sweeps = {
        local_run: start(
            process_groups,
            local_run,
            {**env, "WAREHOUSE_DIR": roots["local"]},
            *sweep_command("local", batches),
        ),
        celery_run: start(process_groups, celery_run, celery_env, *sweep_command("celery", batches)),
    }
    for folder, process in sweeps.items():
        finish(process, folder)

    # The reference ran every step in its run's process.
    with monkeypatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(local_run / "home"))
        with DagsterInstance.get() as local_instance:
            local = sweep_events(local_instance, "local")
    (run_pid,) = {event.pid for event in local if event.event_type == DagsterEventType.RUN_START}
    local_steps = {
        event.step_key: event.pid for event in local if event.event_type == DagsterEventType.STEP_START
    }
    assert set(local_steps.values()) == {run_pid}

    # The Celery run ran the same steps, each in the process pool of the worker that took it: both took
    # some. Where: the worker's own report (its node name); the pid of the step's events, whose process
    # group is one of the workers'; never the run's own process.
    celery = sweep_events(instance, "celery")
    (orchestrator,) = {event.pid for event in celery if event.event_type == DagsterEventType.RUN_START}
    pids = {event.step_key: event.pid for event in celery if event.event_type == DagsterEventType.STEP_START}
    taken_by = {
        event.step_key: event.event_specific_data.metadata["Celery worker"].value
        for event in celery
        if event.event_type == DagsterEventType.ENGINE_EVENT
        and "Celery worker" in (event.event_specific_data.metadata or {})
    }
    assert set(pids) == set(local_steps) == set(taken_by)
    succeeded = {event.step_key for event in celery if event.event_type == DagsterEventType.STEP_SUCCESS}
    assert succeeded == set(pids)
    group_of = {process.pid: name for name, process in workers.items()}
    for step, pid in pids.items():
        assert pid != orchestrator, step
        assert group_of.get(os.getpgid(pid)) == taken_by[step], (step, pid, taken_by[step])
    assert set(taken_by.values()) == set(workers), f"every step on one worker: {taken_by}"

    # The tables: the same objects, and every one of them equal, every partition of every table.
    local_keys = keys_under(bucket, roots["local"])
    assert keys_under(bucket, roots["celery"]) == local_keys
    tables = [
        *(f"supplier_offers/{supplier}" for supplier in registry.order),
        "best_offers",
        "storefront_prices",
    ]
    assert {f"{table}/{batch}.parquet" for table in tables for batch in batches} <= local_keys
    for key in sorted(local_keys):
        expected, got = (read_object(bucket, roots[name], key) for name in ("local", "celery"))
        if not key.endswith(".parquet"):
            assert got == expected, key
            continue
        expected_frame, got_frame = pl.read_parquet(io.BytesIO(expected)), pl.read_parquet(io.BytesIO(got))
        if FETCH_TIME in expected_frame.columns:
            assert got_frame.get_column(FETCH_TIME).null_count() == 0, key
            expected_frame, got_frame = expected_frame.drop(FETCH_TIME), got_frame.drop(FETCH_TIME)
        try:
            assert_frame_equal(got_frame, expected_frame, check_exact=True)
        except AssertionError as exc:
            raise AssertionError(f"{key}: the Celery sweep's table differs: {exc}") from None
