"""The soak's verdict: which invariant each kind of observation breaks, and its result line (no stack)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from bench._soak_account import PUSH_JOB, SWEEP_JOB, FaultWindow, RunInfo, Timeline
from bench._soak_expect import Offer
from bench.soak import Soak

ORIGIN = 1_000_000.0
OUTAGE = "check supplier_reachable on supplier_offers/beta"


def observed(tmp_path: Path) -> Soak:
    """A soak whose stack never ran, filled with the observations of a healthy 5-minute run."""
    soak = Soak(minutes=5, skus=10, folder=tmp_path)
    soak.origin, soak.end = ORIGIN, ORIGIN + 300
    catalog = {"A": ("games", True)}
    soak.timeline = Timeline(catalog, {"alpha": {"A": Offer(Decimal(10), "EUR", 5)}}, soak.rules, ORIGIN)
    soak.timeline.apply(
        {"at": ORIGIN + 30, "supplier": "alpha", "sku": "A", "price": "11", "currency": "EUR", "stock": 5}
    )
    price = str(soak.timeline.at("A", ORIGIN + 31).price)
    soak.log.add({"received_at": ORIGIN + 80, "key": "k", "prices": [
        {"sku": "A", "price": price, "currency": "EUR", "available": True, "supplier": "alpha", "version": 1}
    ]})  # fmt: skip
    for index in range(5):
        start = ORIGIN + 60 * index + 5
        sweep = RunInfo(f"s{index}", SWEEP_JOB, "SUCCESS", start, start + 3, start + 30, {})
        push = RunInfo(f"p{index}", PUSH_JOB, "SUCCESS", start + 40, start + 42, start + 50, {})
        soak.runs.update({sweep.run_id: sweep, push.run_id: push})
    checks = frozenset({"supplier_offers/beta:supplier_reachable"})
    soak.windows = [FaultWindow("supplier_outage", "beta", ORIGIN + 60, ORIGIN + 180, checks=checks)]
    soak.alerts = [
        {"text": f":rotating_light: ALERT {OUTAGE} failed: ERROR: down", "received_at": ORIGIN + 100},
        {
            "text": f":white_check_mark: RECOVERED {OUTAGE} is fine again after 2m",
            "received_at": ORIGIN + 230,
        },
    ]
    soak.expected_ticks = {}
    soak.counters = {"duplicates": 0, "bad_signatures": 0, "repeated_versions": 0, "applied": 1}
    soak.leftovers = []
    lines = [json.dumps({"run_id": run_id, "partition": None, "message": "m"}) for run_id in soak.runs]
    soak.stack.log("daemon", "out").write_text("\n".join(lines) + "\n")
    return soak


def test_a_healthy_run_breaks_nothing_and_prints_the_result_line(tmp_path):
    soak = observed(tmp_path)
    soak.evaluate()
    assert soak.violations == {}
    line = soak.result()
    match = re.fullmatch(r"soak: ratio (\d+\.\d\d) \(target <= 1\.5\) (.*)", line)
    assert match, line
    assert float(match[1]) == pytest.approx(50 / 60, abs=0.01)  # shown 50 s after the change
    assert "cycles 5, runs per cycle 2.0" in match[2] and "broken: none" in match[2]


@pytest.mark.parametrize(
    ("damage", "invariant"),
    [
        ("lost", "exactly once"),
        ("duplicate", "exactly once"),
        ("slow_sweep", "cadence"),
        ("queued", "cadence"),
        ("missed_tick", "cadence"),
        ("failure", "failures"),
        ("second_alert", "alerts"),
        ("broken_log", "logs"),
        ("secret", "secrets"),
        ("leftover", "processes"),
    ],
)
def test_each_kind_of_damage_breaks_its_invariant(tmp_path, damage, invariant):
    soak = observed(tmp_path)
    if damage == "lost":  # a change at +40 s that the storefront never shows
        soak.timeline.apply(
            {"at": ORIGIN + 40, "supplier": "alpha", "sku": "A", "price": "12", "currency": "EUR", "stock": 5}
        )
    elif damage == "duplicate":
        soak.log.add({"received_at": ORIGIN + 90, "key": "k2", "prices": soak.log.applied["A"][0][1:]})
    elif damage == "slow_sweep":
        soak.runs["s1"] = RunInfo("s1", SWEEP_JOB, "SUCCESS", ORIGIN + 65, ORIGIN + 70, ORIGIN + 140, {})
    elif damage == "queued":
        soak.runs["q"] = RunInfo("q", PUSH_JOB, "QUEUED", ORIGIN + 200, None, None, {})
    elif damage == "missed_tick":
        soak.expected_ticks = {"held_price_changes_schedule": [ORIGIN + 120]}
    elif damage == "failure":
        soak.runs["f"] = RunInfo("f", SWEEP_JOB, "FAILURE", ORIGIN + 100, ORIGIN + 101, ORIGIN + 110, {})
        with soak.stack.log("daemon", "out").open("a") as out:
            out.write(json.dumps({"run_id": "f", "message": "m"}) + "\n")
    elif damage == "second_alert":
        soak.alerts.insert(1, dict(soak.alerts[0], received_at=ORIGIN + 160))
    elif damage == "broken_log":
        with soak.stack.log("daemon", "out").open("a") as out:
            out.write('{"run_id": "s0", "mess\n')
    elif damage == "secret":
        (tmp_path / "some.log").write_text(f"posting to http://127.0.0.1/alerts/{soak.token}\n")
    elif damage == "leftover":
        soak.leftovers = [(4242, "python -m dagster api grpc")]
    soak.evaluate()
    assert set(soak.violations) == {invariant}, soak.violations
    assert f"broken: {invariant}" in soak.result()


def test_a_benchmark_that_exits_non_zero_does_not_stop_the_others(monkeypatch, capsys):
    import sys
    import types

    import bench.__main__ as bench_main

    def broken() -> str:
        print("broken: ratio 9.00 (target <= 1) broken: cadence")
        raise SystemExit(1)

    for name, run_fn in (("zz_broken", broken), ("zz_fine", lambda: "zz_fine: ratio 1.00 (target <= 2) ok")):
        module = types.ModuleType(f"bench.{name}")
        module.run = run_fn
        monkeypatch.setitem(sys.modules, f"bench.{name}", module)
    monkeypatch.setattr(bench_main, "available", lambda: ["zz_broken", "zz_fine"])
    assert bench_main.main([]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "broken: ratio 9.00 (target <= 1) broken: cadence",
        "zz_fine: ratio 1.00 (target <= 2) ok",
    ]
