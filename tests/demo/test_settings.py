"""The demo's settings and environment, and a quiet start of both code locations (fast, no servers)."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
from pathlib import Path

from sandbox.demo import (
    ROOT,
    Settings,
    StopSignal,
    code_locations,
    demo_environment,
    prepare_service_config,
)


def test_demo_points_service_config_file_at_its_own_file_unless_one_is_set(tmp_path):
    settings = Settings.from_env({"SANDBOX_DATA_DIR": str(tmp_path), "SANDBOX_PORT": "8711"})
    env = demo_environment(settings, {})
    assert env["SERVICE_CONFIG_FILE"] == str(tmp_path / "service_config.json")
    assert env["SANDBOX_URL"] == "http://127.0.0.1:8711"
    assert env["ORDERS_DB_URL"] == f"sqlite:///{tmp_path / 'orders.db'}"
    assert env["DAGSTER_HOME"] == str(settings.home)
    mine = demo_environment(settings, {"SERVICE_CONFIG_FILE": "/etc/pricing/config.json"})
    assert mine["SERVICE_CONFIG_FILE"] == "/etc/pricing/config.json"


def test_service_config_file_is_created_once_and_never_overwritten(tmp_path):
    path = tmp_path / "data" / "service_config.json"
    assert prepare_service_config(path) is True
    assert json.loads(path.read_text()) == {"dry_run": False}
    path.write_text('{"dry_run": true}')
    assert prepare_service_config(path) is False
    assert json.loads(path.read_text()) == {"dry_run": True}


def test_one_code_server_per_location_of_the_workspace():
    ports = itertools.count(5000)
    locations = code_locations(ROOT / "workspace.yaml", lambda: next(ports))
    assert [(loc.name, loc.module, loc.attribute, loc.port) for loc in locations] == [
        ("pricing", "pricing_assets.definitions", "defs", 5000),
        ("orders", "orders_assets.definitions", "defs", 5001),
    ]


def test_loading_both_code_locations_warns_about_nothing_beta(tmp_path: Path):
    script = (
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "import pricing_assets.definitions, orders_assets.definitions\n"
        # Importing builds nothing; the loaders build the locations, as a code server does.
        "pricing_assets.definitions.defs(), orders_assets.definitions.defs()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(tmp_path), "WAREHOUSE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for warning in ("BetaWarning", "PreviewWarning", "SupersessionWarning"):
        assert warning not in result.stderr, result.stderr[-2000:]


def test_a_burst_of_stop_signals_never_deadlocks_the_demos_wait_loop():
    # Signals land at arbitrary points of the main thread; a handler that takes a lock the main thread
    # may hold at that moment (threading.Event) hangs the demo for good.
    script = """
import os, signal, threading, time
from sandbox.demo import StopRequested, StopSignal

stop = StopSignal()
stop.install()

def pester():
    for _ in range(3000):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.0002)

thread = threading.Thread(target=pester)
thread.start()
woken = 0
while thread.is_alive():
    try:
        stop.sleep(0.001)
    except StopRequested:
        woken += 1
        stop.count = 0
thread.join()
print("woken", woken)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) > 0


def test_a_stop_signal_delivered_twice_at_once_is_one_stop_and_a_later_one_means_hurry(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("sandbox.demo.time.monotonic", lambda: now[0])
    stop = StopSignal()
    stop._handle(signal.SIGTERM, None)
    now[0] += 0.01  # the same SIGTERM, passed on by make
    stop._handle(signal.SIGTERM, None)
    assert stop.requested and not stop.hurry
    now[0] += 2  # Ctrl-C pressed again: stop now
    stop._handle(signal.SIGINT, None)
    assert stop.hurry
