"""The deploy/postgres instance config against the machine's real PostgreSQL: runs, events, cursors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy
from dagster import DagsterInstance, materialize

from tests.integration.pg_instance_defs import pg_probe

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.postgres


def test_postgres_instance_stores_runs_events_and_sensor_cursor(pg_home, pg_database, tmp_path):
    home, database_url = pg_home.home, pg_home.database_url

    instance = DagsterInstance.from_config(str(home))
    try:
        result = materialize([pg_probe], instance=instance)
        assert result.success
        run_id = result.run_id
    finally:
        instance.dispose()

    # A real sensor tick: the daemon evaluates the sensor on this instance and stores its cursor.
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: tests.integration.pg_instance_defs\n"
        f"      working_directory: {ROOT}\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_URL": database_url, "PYTHONPATH": str(ROOT)}
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engine = sqlalchemy.create_engine(pg_database)
    cursor_body = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and cursor_body is None:
            assert daemon.poll() is None, f"dagster-daemon exited with {daemon.returncode}"
            time.sleep(1)
            with engine.connect() as conn:
                rows = conn.execute(
                    sqlalchemy.text(
                        "select instigator_body from instigators where instigator_body like '%pg-tick-%'"
                    )
                ).fetchall()
            cursor_body = rows[0][0] if rows else None
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()

    assert cursor_body is not None, "no sensor cursor reached PostgreSQL within 120 s"
    assert "pg_cursor_sensor" in cursor_body
    with engine.connect() as conn:
        runs = conn.execute(sqlalchemy.text("select run_id, status from runs")).fetchall()
        events = conn.execute(
            sqlalchemy.text(
                "select count(*) from event_logs"
                " where run_id = :r and dagster_event_type = 'ASSET_MATERIALIZATION'"
            ),
            {"r": run_id},
        ).scalar_one()
        ticks = conn.execute(sqlalchemy.text("select count(*) from job_ticks")).scalar_one()
    engine.dispose()
    assert (run_id, "SUCCESS") in [(r[0], r[1]) for r in runs]
    assert events == 1
    assert ticks >= 1
