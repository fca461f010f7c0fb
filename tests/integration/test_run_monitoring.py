"""Dead runs free their slots, and a database outage is retried: the instance configs against the real
dagster-daemon.

- A run worker killed with `kill -9` mid-run stays STARTED and holds its `storefront` pool slot; run
  monitoring (dagster.yaml) ends it at its max runtime and frees the slot, so the next run that needs
  the pool gets it within a bounded time.
- A PostgreSQL outage longer than dagster-postgres' reconnect attempts fails the running step; run
  retries (deploy/postgres/dagster.yaml) re-run it. The outage is a TCP proxy the test cuts; the real
  server is never touched.
The code location is tests/integration/outage_defs.py (a slow asset in the `storefront` pool).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from bench import _procfs as procfs
from pricing_assets.push_sensor import PUSH_MAX_RUNTIME_SECONDS, build_storefront_sync_job
from pricing_assets.sweep import MAX_RUNTIME_TAG, SWEEP_MAX_RUNTIME_SECONDS, build_sweep_job
from tests.integration.outage_defs import SECONDS_TAG
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
JOB = "slow_probe_job"
MAX_RUNTIME = 20  # the killed run's own limit, so the test does not wait the push job's 10 minutes


def instance_home(folder: Path, config_file: Path) -> Path:
    """A DAGSTER_HOME with the repository's instance config (a faster queue poll only)."""
    home = folder / "home"
    home.mkdir()
    config = yaml.safe_load(config_file.read_text())
    config["run_coordinator"]["config"] = {"dequeue_interval_seconds": 1}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def workspace(folder: Path) -> Path:
    path = folder / "workspace.yaml"
    entry = {"module_name": "tests.integration.outage_defs", "working_directory": str(ROOT)}
    path.write_text(yaml.safe_dump({"load_from": [{"python_module": entry}]}))
    return path


def launch(env: dict[str, str], workspace_file: Path, tags: dict[str, str] | None = None) -> None:
    """Submit a run of the probe job through the instance's queue (`dagster job launch`)."""
    command = [str(BIN / "dagster"), "job", "launch", "-w", str(workspace_file), "-j", JOB]
    if tags:
        command += ["--tags", json.dumps(tags)]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def runs(env: dict[str, str]) -> list[DagsterRun]:
    with pytest.MonkeyPatch.context() as patch:
        for name in ("DAGSTER_HOME", "DAGSTER_PG_URL"):
            if name in env:
                patch.setenv(name, env[name])
        with DagsterInstance.get() as instance:
            return list(instance.get_runs(RunsFilter(job_name=JOB)))


def wait_for(condition, timeout: float, what: str, log: Path, env: dict[str, str] | None = None) -> None:
    """Poll `condition` every second, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    seen = [(r.run_id[:8], r.status.value, dict(r.tags)) for r in runs(env)] if env else []
    raise AssertionError(
        f"{what} not within {timeout:.0f} s; runs {seen}; daemon log:\n{log.read_text()[-3000:]}"
    )


@pytest.fixture
def daemon_runner(tmp_path: Path) -> Iterator:
    """Starts dagster-daemon for an env; stops it (by its pid) afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], workspace_file: Path) -> Path:
        log = tmp_path / "daemon.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", str(workspace_file)],
                env=env,
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
                # Its own process group: the code servers it spawns go with it at the end (one killed
                # daemon left its code server running for an hour).
                start_new_session=True,
            )
        started.append(process)
        return log

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever it started and left behind


def parent_of(pid: int) -> int:
    """A process's parent, from /proc."""
    found = procfs.stat(pid)
    assert found is not None, f"process {pid} is gone"
    return found.ppid


def test_the_jobs_carry_a_max_runtime_and_every_instance_config_monitors_runs():
    from dagster import AssetSelection

    assert build_sweep_job(AssetSelection.all()).tags[MAX_RUNTIME_TAG] == str(SWEEP_MAX_RUNTIME_SECONDS)
    assert build_storefront_sync_job().tags[MAX_RUNTIME_TAG] == str(PUSH_MAX_RUNTIME_SECONDS)
    for config_file in (ROOT / "dagster.yaml", ROOT / "deploy" / "postgres" / "dagster.yaml"):
        config = yaml.safe_load(config_file.read_text())
        monitoring = config["run_monitoring"]
        assert monitoring["enabled"] is True
        assert monitoring["start_timeout_seconds"] > 0 and monitoring["cancel_timeout_seconds"] > 0
        assert monitoring["free_slots_after_run_end_seconds"] > 0
        assert config["run_retries"]["enabled"] is True and config["run_retries"]["max_retries"] >= 1
    deploy = yaml.safe_load((ROOT / "deploy" / "postgres" / "dagster.yaml").read_text())
    assert deploy["run_retries"]["retry_on_asset_or_op_failure"] is True  # a DB outage fails a step


def test_a_killed_run_worker_frees_its_pool_slot_for_the_next_run(tmp_path, daemon_runner):
    home = instance_home(tmp_path, ROOT / "dagster.yaml")
    markers = tmp_path / "markers"
    markers.mkdir()
    ws = workspace(tmp_path)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "OUTAGE_MARKER_DIR": str(markers),
        "OUTAGE_PROBE_SECONDS": "120",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DAGSTER_PG_URL", None)
    launch(env, ws, {MAX_RUNTIME_TAG: str(MAX_RUNTIME), SECONDS_TAG: "600"})
    log = daemon_runner(env, ws)
    wait_for(lambda: any(markers.iterdir()), 120, "the first run's step", log)
    [marker] = list(markers.iterdir())
    [victim] = runs(env)
    step = int(marker.read_text())
    # step <- run worker <- code server <- dagster-daemon (ours). kill -9 the code server and all under
    # it: as if the machine running the run had died, so nobody is left to report the run's end.
    code_server = parent_of(parent_of(step))
    assert "dagster api grpc" in (procfs.cmdline(code_server) or "")
    for pid in procfs.tree([code_server]):
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    time.sleep(3)
    assert runs(env)[0].status == DagsterRunStatus.STARTED  # nobody knows: it holds the pool slot

    launch(env, ws, {SECONDS_TAG: "2"})

    def next_run_done() -> bool:
        # The next run, or its automatic retry (launched while the dead code server was being replaced,
        # it may fail to start once): anything but the victim and its own retries.
        return any(
            r.tags.get("dagster/root_run_id", r.run_id) != victim.run_id
            and r.status == DagsterRunStatus.SUCCESS
            for r in runs(env)
        )

    # max runtime 20 s + monitoring poll 15 s + slots freed 30 s after the run ended, + margins.
    wait_for(next_run_done, 240, "the next run of the pool", log, env)
    waited = time.monotonic() - killed_at
    final = {r.run_id: r.status for r in runs(env)}
    assert final[victim.run_id] == DagsterRunStatus.FAILURE
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
        with DagsterInstance.get() as instance:
            messages = [event.message or "" for event in instance.all_logs(victim.run_id)]
    # Ended by run monitoring, not by anyone who saw it die.
    assert any("exceeding maximum runtime of 20 seconds" in message for message in messages), messages[-5:]
    print(f"the next run of the pool finished {waited:.0f} s after the kill")


@pytest.mark.postgres
def test_a_run_failed_by_a_postgres_outage_is_retried(tmp_path, daemon_runner, pg_url, pg_database):
    target = sqlalchemy.engine.make_url(pg_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    try:
        url = target.set(drivername="postgresql", port=proxy.port, database=pg_database.database)
        home = instance_home(tmp_path, ROOT / "deploy" / "postgres" / "dagster.yaml")
        markers = tmp_path / "markers"
        markers.mkdir()
        ws = workspace(tmp_path)
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_URL": url.render_as_string(hide_password=False),
            "OUTAGE_MARKER_DIR": str(markers),
            "OUTAGE_PROBE_SECONDS": "25",
            "PYTHONPATH": str(ROOT),
        }
        launch(env, ws)
        log = daemon_runner(env, ws)
        wait_for(lambda: any(markers.iterdir()), 120, "the run's step", log)
        first = runs(env)[0]
        time.sleep(2)
        # Longer than dagster-postgres' reconnect attempts (observed: 10-15 s outages are absorbed).
        proxy.cut()
        time.sleep(25)
        proxy.restore()

        def retried_and_done() -> bool:
            return any(
                r.tags.get("dagster/parent_run_id") == first.run_id and r.status == DagsterRunStatus.SUCCESS
                for r in runs(env)
            )

        wait_for(retried_and_done, 240, "a successful retry of the run", log)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
            patch.setenv("DAGSTER_PG_URL", env["DAGSTER_PG_URL"])
            with DagsterInstance.get() as instance:
                original = instance.get_run_by_id(first.run_id)
                assert original is not None and original.status == DagsterRunStatus.FAILURE
                [failure] = instance.all_logs(first.run_id, of_type=DagsterEventType.STEP_FAILURE)
                error = failure.dagster_event.step_failure_data.error
                causes = []
                while error is not None:
                    causes.append(error.message)
                    error = error.cause
                assert any("too many retries for DB connection" in cause for cause in causes), causes
    finally:
        proxy.close()
