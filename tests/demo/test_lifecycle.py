"""Stopping `make demo`: SIGTERM (also with SIGINT ignored, as for `make demo &`) and SIGINT end every
process the demo started, checked by process tree, within a bounded time; a run in flight ends
CANCELED, not FAILED. The start-up prints no warning a user cannot act on."""

from __future__ import annotations

import signal
import time

import httpx
import pytest
from dagster import DagsterInstance, DagsterRunStatus

from tests.demo.stack import RunningDemo, answers, start_demo

# A demo's start and stop (twice in the SIGTERM test), bounded well under this on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# The demo's own bounds (daemon 15 s, cancelling runs 30 s, the rest 15 s) plus start-up slack.
STOP_SECONDS = 75
# Start-up warnings the demo used to print that a user can do nothing about.
NOISE = ("BetaWarning", "SupersessionWarning", "will not be used", "PreviewWarning", "DeprecationWarning")


def run_in_flight(demo: RunningDemo) -> str:
    """Hold the CDN so the demo's first bootstrap run stays in progress; its id once it runs."""
    demo.wait_for("sandbox", lambda: answers(f"{demo.sandbox_url}/_health"), 120)
    faults = {"delta": {"latency_ms": 120_000}}
    httpx.post(f"{demo.sandbox_url}/_control/faults", json=faults, timeout=10).raise_for_status()
    running: dict[str, str] = {}

    def started() -> bool:
        if not demo.ui.answers():
            return False
        running.update(demo.ui.runs(["STARTED"]))
        return bool(running)

    demo.wait_for("a bootstrap run in progress", started, 240)
    # The run's steps are now waiting on the CDN; let the sampler see their processes.
    time.sleep(3)
    demo.sample()
    return next(iter(running))


def assert_stopped_cleanly(
    demo: RunningDemo, signum: int, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stop with `signum`; nothing the demo started survives, and the run was cancelled."""
    try:
        took = demo.stop(signum, seconds=STOP_SECONDS)
    except Exception:
        demo.kill_everything()
        raise
    left = demo.left_behind()
    if left:
        demo.kill_everything()
    output = demo.output()
    assert not left, "still running after the demo stopped:\n" + "\n".join(
        f"{proc.pid} {proc.command[:120]}" for proc in left
    )
    assert demo.process.returncode == 0, output[-3000:]
    assert took < STOP_SECONDS
    commands = " ".join(proc.command for proc in demo.seen_so_far())
    # The tree really held the whole stack, the run's worker processes (spawned by the code server)
    # included: the checks above are not vacuous.
    for expected in ("-m sandbox", "code-server start", "dagster-webserver", "dagster-daemon", "spawn_main"):
        assert expected in commands, f"{expected!r} never seen in the demo's process tree: {commands}"
    monkeypatch.setenv("DAGSTER_HOME", str(demo.folder / "dagster_home"))
    with DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        assert run.status == DagsterRunStatus.CANCELED, output[-3000:]
    for noise in NOISE:
        assert noise not in output, f"{noise} printed at start-up:\n{output[:3000]}"


def test_sigterm_stops_every_process_even_with_sigint_ignored(tmp_path, monkeypatch):
    demo = start_demo(tmp_path, ignore_sigint=True)
    try:
        run_id = run_in_flight(demo)
    except BaseException:
        demo.kill_everything()
        raise
    assert_stopped_cleanly(demo, signal.SIGTERM, run_id, monkeypatch)

    # Started again on that state (a run cancelled mid-step, history and ledger kept), the demo
    # completes its restart bootstrap (no first-start backfill) and stops cleanly again.
    again = start_demo(tmp_path)
    try:
        again.wait_ready(seconds=300)
        assert "bootstrap incomplete" not in again.output(), again.output()[-3000:]
        again.stop(signal.SIGTERM, seconds=STOP_SECONDS)
        assert not again.left_behind()
    finally:
        again.kill_everything()


def test_sigint_stops_every_process(tmp_path, monkeypatch):
    demo = start_demo(tmp_path)
    try:
        run_id = run_in_flight(demo)
    except BaseException:
        demo.kill_everything()
        raise
    assert_stopped_cleanly(demo, signal.SIGINT, run_id, monkeypatch)
