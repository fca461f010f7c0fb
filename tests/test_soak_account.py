"""The soak's bookkeeping: expected entries over time, latency, convergence, cadence, failures, alerts."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal

import pytest

from bench._soak_account import (
    PUSH_JOB,
    RECONCILE_JOB,
    SWEEP_JOB,
    FaultWindow,
    HoldLog,
    Latency,
    RunInfo,
    StorefrontLog,
    Timeline,
    alert_report,
    convergence,
    cycles,
    explained_by,
    fault_affected,
    latencies,
    log_report,
    p95,
    parse_alert,
    queue_waits,
    schedule_delays,
    slowed_by_fault,
)
from bench._soak_expect import Expected, Offer, load_rules
from bench._soak_timetable import COMPACT_PERIODS, SEQUENTIAL_PERIODS, Fault, convergence_checks, timetable

D = Decimal
RULES = load_rules(
    {"store_currency": "EUR", "fx": {}, "suppliers": [{"id": "alpha"}, {"id": "beta"}]},
    # No markup, and no batch rule (a two-SKU catalog would always trip it).
    {"markup": {"percent": "0", "min_margin": "0"}, "guard": {"max_batch_change_share": "1"}},
)


def timeline() -> Timeline:
    """Two active SKUs (A at 10 from alpha, B at 20 from beta) and one retired SKU, from t=0."""
    catalog = {"A": ("games", True), "B": ("games", True), "R": ("games", False)}
    offers = {
        "alpha": {"A": Offer(D(10), "EUR", 5), "R": Offer(D(1), "EUR", 5)},
        "beta": {"B": Offer(D(20), "EUR", None)},
    }
    return Timeline(catalog, offers, RULES, start=0.0)


def change(at: float, supplier: str, sku: str, price: str, stock: int | None = 3) -> dict:
    return {"at": at, "supplier": supplier, "sku": sku, "price": price, "currency": "EUR", "stock": stock}


def entry(sku: str, price: str | None, supplier: str | None = "alpha", available: bool = True) -> dict:
    return {
        "sku": sku,
        "price": price,
        "currency": "EUR",
        "available": available,
        "supplier": supplier,
        "version": 1,
    }


def push(at: float, *entries: dict) -> dict:
    return {"received_at": at, "prices": list(entries), "key": f"k{at}"}


A10, A12 = (
    Expected(True, D("10.0000"), "alpha", D("10.0000")),
    Expected(True, D("12.0000"), "alpha", D("12.0000")),
)


def test_timeline_follows_the_stream_and_ignores_moves_that_change_nothing():
    line = timeline()
    assert set(line.entries) == {"A", "B"}  # the retired SKU is never priced
    assert line.apply(change(5, "alpha", "A", "12.00"))
    assert not line.apply(change(6, "beta", "A", "30.00"))  # beta is dearer: the entry stays
    assert not line.apply(change(7, "alpha", "R", "2.00"))
    assert line.apply(change(9, "alpha", "A", "10.00", stock=0))  # alpha out of stock: beta wins
    assert line.at("A", 4.9) == A10 and line.at("A", 5) == A12
    assert line.at("A", 9).supplier == "beta"
    assert line.during("A", 4, 6) == [A10, A12]
    assert line.during("A", 6, 8) == [A12]
    assert [(sku, at, supplier) for sku, _, at, _, supplier in line.changes()] == [
        ("A", 5.0, "alpha"),
        ("A", 9.0, "alpha"),
    ]


def test_storefront_log_replays_pushes_and_wipes():
    log = StorefrontLog()
    log.add(push(10, entry("A", "10.0000")))
    log.add(push(20, {**entry("A", "10.0000"), "version": 2}))
    log.wipe(30)
    assert log.shown("A", 25)["version"] == 2 and log.shown("A", 35) is None
    assert log.last_pushed_price("A") == D(10)  # a wipe does not undo what was acknowledged
    log.add(push(40, {**entry("A", "10.0000"), "version": 2}))  # re-pushed after the wipe: not a duplicate
    assert log.duplicates() == []
    log.add(push(50, {**entry("A", "10.0000"), "version": 2}))
    assert log.duplicates() == [("A", 2, 2)]
    assert log.first_showing("A", 15, A10, RULES) == 20.0 and log.first_showing("A", 55, A10, RULES) is None


def test_latencies_classify_every_change():
    line = timeline()
    line.apply(change(100, "alpha", "A", "12.00"))  # shown 30 s later
    line.apply(change(100, "beta", "B", "21.00"))  # superseded before it showed
    line.apply(change(150, "beta", "B", "22.00"))  # never shown: lost
    log = StorefrontLog()
    log.add(push(50, entry("A", "10.0000"), entry("B", "20.0000", "beta")))
    log.add(push(130, entry("A", "12.0000")))
    found = {(item.sku, item.at): item for item in latencies(line, log, end=400, horizon=120)}
    assert found[("A", 100.0)].status == "shown" and found[("A", 100.0)].seconds == 30.0
    assert found[("B", 100.0)].status == "superseded"
    assert found[("B", 150.0)].status == "lost"
    # Too recent to judge, held by the guard (> 30 % from the last pushed price), or a no-op.
    assert {item.status for item in latencies(line, log, end=200, horizon=120) if item.at == 150} == {
        "pending"
    }
    line.apply(change(160, "alpha", "A", "20.00"))
    line.apply(change(170, "alpha", "A", "12.00"))
    statuses = {
        item.at: item.status for item in latencies(line, log, end=400, horizon=120) if item.sku == "A"
    }
    assert statuses[160.0] == "superseded" and statuses[170.0] == "noop"
    line.apply(change(180, "alpha", "A", "20.00"))
    assert {item.at: item.status for item in latencies(line, log, end=400, horizon=120)}[180.0] == "held"


def test_convergence_needs_an_expected_entry_of_the_window_or_a_hold_by_the_project():
    line = timeline()
    line.apply(change(100, "alpha", "A", "12.00"))
    log = StorefrontLog()
    log.add(push(50, entry("A", "10.0000"), entry("B", "20.0000", "beta")))
    live = {"A": entry("A", "10.0000"), "B": entry("B", "20.0000", "beta")}
    assert convergence(line, live, log, {}, since=90, now=200, label="t").ok  # A10 was expected at 90
    late = convergence(line, live, log, {}, since=110, now=200, label="t")
    assert late.mismatched == [("A", "10.0000 from alpha", "12.0000 from alpha")] and late.checked == 2
    held = convergence(line, live, log, {"A": [(D(12), "change 20.0% > 10%")]}, since=110, now=200, label="t")
    assert held.ok and held.held == [("A", "change 20.0% > 10%", False)]  # 20 % is within the rules' 30 %
    line.apply(change(150, "alpha", "A", "14.00"))
    holds = {"A": [(D(99), "x"), (D(14), "change 40.0% > 30%")]}  # the hold whose price was expected
    agreed = convergence(line, live, log, holds, since=160, now=200, label="t")
    assert agreed.held == [("A", "change 40.0% > 30%", True)]
    other = convergence(line, live, log, {"A": [(D(99), "x")]}, since=110, now=200, label="t")
    assert not other.ok  # held at a price nobody expected: not an excuse
    # A hold keeps the last acknowledged price on the storefront; anything else there is a mismatch.
    moved = {**live, "A": entry("A", "11.0000")}
    assert not convergence(line, moved, log, holds, since=160, now=200, label="t").ok
    assert not convergence(line, {"B": live["B"]}, log, holds, since=160, now=200, label="t").ok
    assert not convergence(line, {"B": live["B"]}, log, {}, since=0, now=200, label="t").ok  # A missing


def test_a_hold_released_late_in_the_window_still_explains_the_kept_price():
    line = timeline()
    line.apply(change(100, "alpha", "A", "14.00"))  # +40 %: the project holds it
    line.apply(change(180, "alpha", "A", "10.50"))  # back within the guard: the next push shows it
    log = StorefrontLog()
    log.add(push(50, entry("A", "10.0000"), entry("B", "20.0000", "beta")))
    live = {"A": entry("A", "10.0000"), "B": entry("B", "20.0000", "beta")}
    holds = HoldLog()
    holds.add(60, {})
    holds.add(110, {"A": (D(14), "change 40.0% > 30%")})
    holds.add(115, {"A": (D(14), "change 40.0% > 30%")})  # unchanged: not a new sample
    holds.add(190, {})  # the sweep priced A at 10.50, not held; its push comes after the check
    assert holds.times == [60, 110, 190]
    assert holds.during(120, 200) == {"A": [(D(14), "change 40.0% > 30%")]}  # in effect at 120
    assert holds.during(195, 200) == {} and holds.during(0, 50) == {}
    report = convergence(line, live, log, holds.during(120, 200), since=120, now=200, label="t")
    assert report.ok and report.held == [("A", "change 40.0% > 30%", True)]
    # Only the newest sample (what the check used to read): the storefront looks wrong.
    assert not convergence(line, live, log, holds.during(200, 200), since=120, now=200, label="t").ok


def test_which_changes_a_fault_may_have_delayed():
    outage = FaultWindow("supplier_outage", "beta", 100, 200)
    down = FaultWindow("storefront_503", "storefront", 300, 330)
    alpha = Latency("A", 150, A10, "shown", 10, "alpha")
    assert not fault_affected(alpha, [outage], 60)  # another supplier's outage
    assert fault_affected(Latency("B", 150, A10, "shown", 10, "beta"), [outage], 60)
    # In flight when the storefront went down (changed at 250, shown at 310): delayed by it.
    assert fault_affected(Latency("A", 250, A10, "shown", 60, "alpha"), [down], 60)
    assert not fault_affected(Latency("A", 250, A10, "shown", 10, "alpha"), [down], 60)  # shown before
    assert fault_affected(Latency("A", 380, A10, "shown", 10, "alpha"), [down], 60)  # the recovery cycle
    assert not fault_affected(Latency("A", 391, A10, "shown", 10, "alpha"), [down], 60)


def run(
    run_id: str, job: str, created: float, started: float | None, ended: float | None, **tags: str
) -> RunInfo:
    status = "SUCCESS" if ended else ("STARTED" if started else "QUEUED")
    return RunInfo(
        run_id, job, status, created, started, ended, {k.replace("__", "/"): v for k, v in tags.items()}
    )


def test_cycles_pair_each_sweep_with_its_push_runs():
    sweeps = [run("s1", SWEEP_JOB, 0, 2, 30), run("s2", SWEEP_JOB, 60, 62, 95)]
    pushes = [
        run("p1", PUSH_JOB, 40, 41, 50, storefront__trigger_run_id="s1"),
        run("p2", PUSH_JOB, 41, 60, 120, storefront__trigger_run_id="s1"),
        run("p3", PUSH_JOB, 100, None, None, storefront__trigger_run_id="s2"),
    ]
    found = cycles(sweeps + pushes)
    assert [[p.run_id for p in c.pushes] for c in found] == [["p1", "p2"], ["p3"]]
    assert found[0].sweep_seconds(999) == 30 and found[0].push_seconds(999) == 90
    assert found[1].push_seconds(200) == 105  # still waiting: counted until now
    untagged = [RunInfo(r.run_id, r.job, r.status, r.created, r.started, r.ended, {}) for r in pushes]
    assert [[p.run_id for p in c.pushes] for c in cycles(sweeps + untagged)] == [["p1", "p2"], ["p3"]]


def test_queue_waits_count_runs_still_waiting():
    waits = {
        r.run_id: wait
        for r, wait in queue_waits([run("a", "j", 0, 5, 9), run("b", "j", 10, None, None)], 100)
    }
    assert waits == {"a": 5, "b": 90}


def test_schedule_delays_match_ticks_to_runs():
    runs = [run("h1", "held", 300.5, 304, 310, dagster__schedule_name="held"), run("x", "other", 0, 1, 2)]
    found = schedule_delays({"held": [300.0, 600.0]}, runs, 700)
    assert found == [("held", 300.0, 4.0), ("held", 600.0, None)]


def test_failures_are_explained_by_the_right_fault_at_the_right_time():
    window = FaultWindow("storefront_503", "storefront", 100, 130, frozenset({PUSH_JOB}))
    assert explained_by(run("a", PUSH_JOB, 120, 121, 140), [window], grace=60) == window
    assert explained_by(run("b", PUSH_JOB, 195, 196, 200), [window], grace=60) is None  # too late
    assert explained_by(run("c", SWEEP_JOB, 120, 121, 140), [window], grace=60) is None  # another job


def test_alert_report_wants_one_alert_and_one_recovery_per_outage_and_nothing_unexplained():
    outage = FaultWindow(
        "supplier_outage", "beta", 100, 200, checks=frozenset({"supplier_offers/beta:supplier_reachable"})
    )
    subject = "check supplier_reachable on supplier_offers/beta"
    good = [
        {"text": f":rotating_light: ALERT {subject} failed: ERROR: down (run r, t)", "received_at": 130},
        {"text": f":white_check_mark: RECOVERED {subject} is fine again after 2m (...)", "received_at": 260},
    ]
    assert parse_alert(good[0]["text"]) == ("alert", subject)
    assert alert_report(good, [outage], grace=120).problems == []
    twice = alert_report([good[0], good[0], good[1]], [outage], grace=120).problems
    assert any("2 alerts and 1 recoveries" in p for p in twice)
    assert any("without recovery" in p for p in alert_report(good[:1], [outage], grace=120).problems)
    stray = {"text": ":rotating_light: ALERT job price_sweep_job failed: boom (run r, t)", "received_at": 150}
    assert (
        "alert not explained by any fault: job price_sweep_job"
        in alert_report([*good, stray], [outage], grace=120).problems
    )


def test_log_report_parses_lines_and_finds_runs_without_them():
    lines = [
        json.dumps({"event": "daemon says", "level": "info"}),
        json.dumps({"run_id": "r1", "partition": "batch-001", "message": "m"}),
        json.dumps({"run_id": "r2", "partition": None, "message": "m"}),
        '{"run_id": "r3", "broken',
        "2026-12-01 - dagster - INFO - human text",
    ]
    runs = [
        run("r1", SWEEP_JOB, 0, 1, 2, dagster__asset_partition_range_start="batch-000"),
        run("r2", PUSH_JOB, 0, 1, 2, dagster__partition="batch-003"),
        run("r4", PUSH_JOB, 0, 1, 2),
        run("r5", PUSH_JOB, 0, None, None),  # not finished: not judged
    ]
    report = log_report(lines, runs)
    assert (report.run_lines, report.daemon_lines, report.text_lines, len(report.broken)) == (2, 1, 1, 1)
    assert report.runs_without_lines == ["r4"] and report.runs_without_partition == ["r2"]


def test_p95_is_the_nearest_rank():
    assert p95([]) is None and p95([3.0]) == 3.0
    assert p95([float(v) for v in range(1, 101)]) == 95.0


def test_timetables_fit_the_duration_and_every_fault_is_checked_two_periods_after():
    with pytest.raises(ValueError, match="at least 5 sweep periods"):
        timetable(4 * 60, 60)
    for periods in (COMPACT_PERIODS, 12, SEQUENTIAL_PERIODS, 30):
        duration = periods * 60.0
        faults = timetable(duration, 60)
        assert {f.kind for f in faults} == {
            "supplier_outage",
            "rate_limit_storm",
            "storefront_503",
            "storefront_wipe",
            "cdn_rekey",
        }
        outage = next(f for f in faults if f.kind == "supplier_outage")
        assert outage.end - outage.start == 120  # two periods down
        checks = convergence_checks(faults, duration, 60)
        assert checks[-1][0] == duration
        for fault in faults:
            assert any(at == min(fault.end + 120, duration) and fault.kind in label for at, label in checks)
    assert all(f.start >= 60 for f in timetable(5 * 60, 60))  # a steady period first
    sequential = timetable(SEQUENTIAL_PERIODS * 60.0, 60)
    assert all(a.end + 120 <= b.start for a, b in itertools.pairwise(sequential))


def test_fault_windows_say_what_they_explain():
    storefront_503 = Fault("storefront_503", "storefront", 1, 2).window(100)
    assert storefront_503.jobs == {SWEEP_JOB, PUSH_JOB, RECONCILE_JOB}
    assert storefront_503.checks == {"storefront_sync:storefront_acknowledged"}
    outage = Fault("supplier_outage", "beta", 1, 3).window(100)
    assert (outage.start, outage.end, outage.checks) == (
        101,
        103,
        {"supplier_offers/beta:supplier_reachable"},
    )
    assert Fault("cdn_rekey", "delta", 0, 1).sandbox_faults() == {"delta": {"rekeyed": True}}
    assert Fault("storefront_wipe", "storefront", 5, 5).sandbox_faults() is None


def test_a_sweep_run_slowed_past_its_period_is_excused_only_while_a_fault_was_on():
    storm = FaultWindow("rate_limit_storm", "alpha", 100, 130)
    wipe = FaultWindow("storefront_wipe", "storefront", 200, 200)
    assert slowed_by_fault(run("s", SWEEP_JOB, 90, 95, 170), [storm, wipe], 300) == storm
    assert slowed_by_fault(run("s", SWEEP_JOB, 140, 145, 215), [storm, wipe], 300) is None  # instant
    assert slowed_by_fault(run("s", SWEEP_JOB, 20, 25, 95), [storm], 300) is None  # ended before it
    assert slowed_by_fault(run("s", SWEEP_JOB, 120, 125, None), [storm], 300) == storm  # still running
