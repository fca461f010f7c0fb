"""soak: the real stack operated for a while, with a moving market and faults on a timetable.

What runs: the sandbox (suppliers, CDN, storefront, orders DB, alert webhook), `dagster-webserver` and
`dagster-daemon` with both code locations of `workspace.yaml`, on a fresh temp DAGSTER_HOME with the
PostgreSQL instance config (`deploy/postgres/dagster.yaml`) pointed at a database the soak creates on
127.0.0.1:5432 and drops, and a temp WAREHOUSE_DIR. SERVICE_CONFIG (through SERVICE_CONFIG_FILE) sets
a one-minute sweep. The soak bootstraps the catalog and the CDN file through the API, switches every
sensor and schedule on (GraphQL, as an operator would), starts the sandbox's seeded price stream (every
20 s, 5 % of each REST supplier's offers change price and stock) and injects the faults of
bench/_soak_timetable.py. Checks, while it runs and at the end (bench/_soak_account.py):

- cadence: every sweep run (`price_cycle_job`: the sweep and its push in one run) ends within one
  period of its creation, unless a fault of the timetable was on while it ran (a supplier throttled to
  1 request/s or down, the storefront refusing pushes: counted and reported as slowed), and any push
  run within one period of its end; sweeps start at least every 1.5 periods; no run waits to start
  longer than one period;
  every schedule tick due during the soak starts its run within one period;
- convergence: two periods after each fault clears (and at the end) the storefront holds, for every
  active SKU, what bench/_soak_expect.py computes from the sandbox's ground truth during the last two
  periods; a change the project holds (storefront_prices `held`) is excepted and listed, with whether
  the guard computed here agrees;
- exactly once: no SKU version applied twice, no bad signature, nothing lost (every change older than
  three periods was shown, superseded by a later one, or held);
- failures: every failed run is explained by a fault of the timetable; alerts: every alert is explained
  and recovered, and the supplier outage raised exactly one alert and one recovery;
- logs: every JSON line parses and every finished run has lines with its run id (and partition); the
  alert webhook's secret URL appears in no log, file or database row;
- processes: nothing the soak started is left running after it stops.

The ratio is the p95 latency from a supplier's price change to the storefront showing it, over the
changes no fault touched (none of its supplier's faults nor a storefront fault was on between the
change and its showing, nor cleared less than a period before it), divided by the sweep period. Any
broken invariant exits non-zero.

Knobs: BENCH_SOAK_MINUTES (default 5; >= 21 spreads the faults out, docs/benchmarks.md has a 30-minute
run), BENCH_SCALE (catalog size, 2000 SKUs at 1.0), BENCH_SOAK_PG_URL (the server's admin URL, default
postgresql://postgres@127.0.0.1:5432/postgres), BENCH_SOAK_KEEP (keep the temp folder with every log).
Without PostgreSQL it is skipped, except in CI (`CI` set), where it fails.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import sqlalchemy
import yaml

from bench._harness import line, scaled
from bench._soak_account import (
    SWEEP_JOB,
    Convergence,
    FaultWindow,
    Hold,
    HoldLog,
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
    queue_waits,
    schedule_delays,
    slowed_by_fault,
)
from bench._soak_expect import Offer, load_rules
from bench._soak_stack import ROOT, GraphQL, Operator, PostgresDatabase, Stack
from bench._soak_timetable import FILES_JOB, Fault, convergence_checks, timetable

NAME = "soak"
TARGET = 1.5
SWEEP_MINUTES = 1
STREAM_EVERY_S = 20
STREAM_SHARE = 0.05
POLL_S = 5
RUNS_POLL_S = 15
SEED = 7
SERVICE_CONFIG: dict[str, Any] = {
    "sweep_minutes": SWEEP_MINUTES,
    # Longer than a soak between two 30-minute CDN refreshes: the file supplier's offers stay candidates.
    "staleness_ttl": "PT1H",
    # A discount category exercises the margin floor; .99 endings exercise rounding.
    "markup": {
        "percent": "15",
        "categories": {"games": "20", "gift-cards": "-10"},
        "rounding": {"mode": "ending_99"},
        "min_margin": "0.05",
    },
}


@dataclass
class Soak:
    """One soak: the stack, what it observed, and the checks' results."""

    minutes: float
    skus: int
    folder: Path
    period: float = SWEEP_MINUTES * 60.0
    token: str = field(default_factory=lambda: f"soak-{uuid.uuid4().hex}")
    runs: dict[str, RunInfo] = field(default_factory=dict)
    windows: list[FaultWindow] = field(default_factory=list)
    reports: list[Convergence] = field(default_factory=list)
    log: StorefrontLog = field(default_factory=StorefrontLog)
    notes: list[str] = field(default_factory=list)
    violations: dict[str, list[str]] = field(default_factory=dict)
    origin: float = 0.0
    end: float = 0.0
    changes_next: int = 0
    pushes_next: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    live: dict[str, Any] = field(default_factory=dict)
    # The project's held changes when the soak stopped (sku -> price, reason), and over time.
    held_at_end: dict[str, Hold] = field(default_factory=dict)
    holds: HoldLog = field(default_factory=HoldLog)
    slowed: list[RunInfo] = field(default_factory=list)  # sweep runs over a period while a fault was on

    def __post_init__(self) -> None:
        self._held_stamp: tuple[tuple[str, int], ...] = ()
        self._held: dict[str, Hold] = {}
        self.stack = Stack(folder=self.folder, skus=self.skus, seed=SEED, service_config=SERVICE_CONFIG)
        self.stack.env_extra = {"SANDBOX_ALERT_TOKEN": self.token}
        registry = yaml.safe_load((ROOT / "pricing_assets" / "suppliers.yaml").read_text())
        self.rules = load_rules(registry, SERVICE_CONFIG)
        self.duration = self.minutes * 60.0
        self.faults = timetable(self.duration, self.period)
        self.checks = convergence_checks(self.faults, self.duration, self.period)

    def violate(self, invariant: str, problem: str) -> None:
        """Record a broken invariant."""
        self.violations.setdefault(invariant, []).append(problem)

    def say(self, text: str) -> None:
        """Progress on stderr (the result line is the only stdout)."""
        offset = time.time() - self.origin if self.origin else 0.0
        print(f"[soak +{offset:5.0f}s] {text}", file=sys.stderr, flush=True)

    # -------------------------------------------------------------- the sandbox

    def sandbox(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call to the sandbox's control API."""
        response = httpx.request(method, f"{self.stack.sandbox_url}{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def ground_truth(self) -> Timeline:
        """The catalog and every supplier's offers now, as the start of the expected timeline."""
        catalog: dict[str, tuple[str | None, bool]] = {}
        page: int | None = 1
        while page is not None:
            body = self.sandbox("GET", "/storefront/catalog", params={"page": page, "per_page": 1000})
            catalog.update({row["sku"]: (row["category"], bool(row["active"])) for row in body["items"]})
            page = body["next_page"]
        truth = self.sandbox("GET", "/_control/offers")
        self.changes_next = int(truth["stream_next"])
        offers = {
            supplier: {
                sku: Offer(Decimal(price), currency, stock) for sku, (price, currency, stock) in rows.items()
            }
            for supplier, rows in truth["offers"].items()
        }
        return Timeline(catalog, offers, self.rules, time.time())

    def poll_sandbox(self) -> None:
        """New stream changes into the timeline, new pushes into the storefront log, the live prices."""
        changes = self.sandbox("GET", "/_control/stream/changes", params={"since": self.changes_next})
        for change in changes["changes"]:
            self.timeline.apply(change)
        self.changes_next = changes["next"]
        store = self.sandbox("GET", "/_control/storefront", params={"since": self.pushes_next})
        for push in store["pushes"]:
            self.log.add(push)
        self.pushes_next = store["next"]
        self.live = store["prices"]
        self.counters = {
            k: int(store[k]) for k in ("duplicates", "bad_signatures", "repeated_versions", "applied")
        }

    # -------------------------------------------------------------- Dagster

    def poll_runs(self) -> None:
        """Every run created since shortly before the start, as the webserver reports it."""
        for raw in self.operator.runs(created_after=self.origin - 600):
            self.runs[raw["runId"]] = RunInfo(
                run_id=raw["runId"],
                job=raw["jobName"],
                status=raw["status"],
                created=float(raw["creationTime"]),
                started=float(raw["startTime"]) if raw["startTime"] else None,
                ended=float(raw["endTime"]) if raw["endTime"] else None,
                tags={tag["key"]: tag["value"] for tag in raw["tags"]},
            )

    def bootstrap(self) -> None:
        """What an operator does first: materialize the catalog and the CDN file, once."""
        run_id = self.operator.launch("pricing", "__ASSET_JOB", [["catalog"], ["supplier_files", "delta"]])
        status = self.operator.wait_run(run_id, 300)
        if status != "SUCCESS":
            raise RuntimeError(f"bootstrap run {run_id} ended {status}; see {self.folder}")

    # -------------------------------------------------------------- faults and checks

    def start_fault(self, fault: Fault) -> None:
        """Inject a fault now."""
        settings = fault.sandbox_faults()
        if settings:
            self.sandbox("POST", "/_control/faults", json=settings)
        if fault.kind == "storefront_wipe":
            self.sandbox("POST", "/_control/storefront_wipe")
            self.log.wipe(time.time())
        if fault.kind == "cdn_rekey":
            # The schedule fetches every 30 minutes; an operator refreshes now to pick the new file up.
            self.refresh_run = self.operator.launch("pricing", FILES_JOB)
        self.say(f"fault on: {fault.kind}({fault.target})")

    def may_clear(self, fault: Fault, elapsed: float) -> bool:
        """Whether a fault may clear now: a re-key stays until the refresh launched for it has run
        (at most one period longer), or the fault would never have been seen."""
        if fault.kind != "cdn_rekey" or elapsed >= fault.end + self.period:
            return True
        run = self.runs.get(getattr(self, "refresh_run", ""))
        return run is not None and run.ended is not None

    def clear_fault(self, fault: Fault) -> None:
        """Clear a fault now."""
        settings = fault.sandbox_faults()
        if settings:
            self.sandbox("POST", "/_control/faults", json=dict.fromkeys(settings))
        if fault.kind == "cdn_rekey":
            self.operator.launch("pricing", FILES_JOB)
        self.say(f"fault off: {fault.kind}({fault.target})")

    def held_by_project(self) -> dict[str, Hold]:
        """SKUs whose latest storefront_prices row is a held change: sku -> (price, hold reason)."""
        files = sorted((self.folder / "warehouse" / "storefront_prices").glob("*.parquet"))
        if not files:
            return {}
        # Sampled every poll: read the files again only when one of them was replaced.
        stamp = tuple((f.name, f.stat().st_mtime_ns) for f in files)
        if stamp == self._held_stamp:
            return self._held
        frame = pl.concat(
            [pl.read_parquet(f, columns=["sku", "price", "held", "hold_reason"]) for f in files]
        )
        rows = frame.filter(pl.col("held").fill_null(False)).iter_rows()
        self._held_stamp = stamp
        self._held = {
            sku: (None if price is None else Decimal(str(price)), str(reason))
            for sku, price, _, reason in rows
        }
        return self._held

    def check(self, label: str) -> None:
        """A convergence check over the last two periods."""
        self.poll_sandbox()
        now = time.time()
        since = now - 2 * self.period
        held = self.holds.during(since, now)
        report = convergence(self.timeline, self.live, self.log, held, since=since, now=now, label=label)
        self.reports.append(report)
        differ, held = len(report.mismatched), len(report.held)
        self.say(f"convergence {label}: {report.checked} SKUs, {differ} differ, {held} held")

    # -------------------------------------------------------------- the soak

    def execute(self) -> None:
        """Start, operate for the soak's duration under the timetable, stop, and check everything."""
        self.operator = Operator(GraphQL(""))
        try:
            self.stack.start()
            self.operator = Operator(GraphQL(self.stack.ui_url))
            self.operator.wait_loaded({"pricing", "orders"})
            self.say("stack up; bootstrapping catalog and CDN file")
            self.bootstrap()
            self.timeline = self.ground_truth()
            self.origin = time.time()
            self.end = self.origin + self.duration
            switched = self.operator.set_all(True)
            self.say(f"switched on: {', '.join(switched) or 'nothing (all running)'}")
            self.schedules = [
                (location, item["name"])
                for kind, location, item in self.operator.instigators()
                if kind == "schedule"
            ]
            self.sandbox("POST", "/_control/stream", json={"every_s": STREAM_EVERY_S, "share": STREAM_SHARE})
            self.operate()
            self.sandbox("POST", "/_control/stream", json={"every_s": 0})
            self.held_at_end = self.held_by_project()
            self.poll_sandbox()
            self.poll_runs()
            self.alerts = self.sandbox("GET", "/alerts")["alerts"]
            self.expected_ticks = {
                name: self.operator.schedule_ticks(location, name, self.origin, self.end - self.period)
                for location, name in self.schedules
            }
            self.operator.set_all(False)
        finally:
            self.stack.stop_daemon()
            try:
                self.poll_runs()  # runs that finished while draining
            except Exception as exc:  # the webserver may be gone after a failed start
                self.notes.append(f"last run poll failed: {type(exc).__name__}")
            self.operator.graphql.close()
            self.leftovers = self.stack.stop_rest()
            self.scan_database()
            self.stack.drop_database()
        self.evaluate()

    def operate(self) -> None:
        """The soak's main loop: faults on time, polls, convergence checks, process sampling."""
        actions = sorted(
            [(fault.start, 0, fault) for fault in self.faults]
            + [(fault.end, 1, fault) for fault in self.faults],
            key=lambda item: (item[0], item[1]),
        )
        started: dict[Fault, float] = {}
        checks = list(self.checks)
        next_runs = 0.0
        while True:
            now = time.time()
            elapsed = now - self.origin
            while actions and actions[0][0] <= elapsed:
                _, clearing, fault = actions.pop(0)
                if clearing and not self.may_clear(fault, elapsed):
                    self.poll_runs()
                    actions.append((elapsed + POLL_S, 1, fault))
                    actions.sort(key=lambda item: (item[0], item[1]))
                    break
                if clearing:
                    if fault.end > fault.start:
                        self.clear_fault(fault)
                    window = fault.window(self.origin)
                    self.windows.append(
                        FaultWindow(
                            window.kind,
                            window.target,
                            started[fault],
                            time.time(),
                            window.jobs,
                            window.checks,
                        )
                    )
                else:
                    started[fault] = time.time()
                    self.start_fault(fault)
            self.poll_sandbox()
            # A hold released by a sweep that has not pushed yet still explains what the storefront
            # shows: the checks look at every hold of their window, not only the newest files.
            self.holds.add(time.time(), self.held_by_project())
            while checks and checks[0][0] <= elapsed:
                self.check(checks.pop(0)[1])
            if now >= next_runs:
                self.poll_runs()
                next_runs = now + RUNS_POLL_S
                self.progress()
            self.stack.watch.sample()
            if not checks and not actions:
                return
            time.sleep(max(0.0, min(POLL_S, self.end - time.time())))

    def progress(self) -> None:
        """One progress line."""
        by_status: dict[str, int] = {}
        for run in self.runs.values():
            by_status[run.status] = by_status.get(run.status, 0) + 1
        sweeps = sum(1 for run in self.runs.values() if run.job == SWEEP_JOB)
        self.say(
            f"runs {dict(sorted(by_status.items()))}, sweeps {sweeps}, pushes {self.log.pushes}, "
            f"stream changes {self.changes_next}"
        )

    def scan_database(self) -> None:
        """The webhook's secret must not be stored anywhere in the instance's database."""
        url = self.stack.env.get("DAGSTER_PG_URL")
        if not url:
            return
        engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
        try:
            with engine.connect() as conn:
                for table, column in (
                    ("event_logs", "event"),
                    ("instigators", "instigator_body"),
                    ("job_ticks", "tick_body"),
                ):
                    hits = conn.execute(
                        sqlalchemy.text(f"select count(*) from {table} where {column} like :token"),
                        {"token": f"%{self.token}%"},
                    ).scalar_one()
                    if hits:
                        self.violate("secrets", f"the alert webhook token is in {hits} rows of {table}")
        finally:
            engine.dispose()

    # -------------------------------------------------------------- the verdict

    def evaluate(self) -> None:
        """Turn what was observed into figures and violations."""
        p, now = self.period, self.end
        runs = [run for run in self.runs.values() if run.created >= self.origin - 1]
        # cadence
        self.cycles = cycles(runs)
        self.slowed = []
        for cycle in self.cycles:
            took = cycle.sweep_seconds(now)
            if took > p and slowed_by_fault(cycle.sweep, self.windows, now) is not None:
                # A supplier answering 1 request/s, an outage's retries or a storefront refusing pushes
                # lengthen the run that meets them, as they fail runs: the timetable explains it.
                self.slowed.append(cycle.sweep)
            elif took > p:
                self.violate("cadence", f"sweep run {cycle.sweep.run_id[:8]} took {took:.0f} s (> {p:.0f} s)")
            pushed = cycle.push_seconds(now)
            if pushed is not None and pushed > p:
                self.violate(
                    "cadence",
                    f"sweep {cycle.sweep.run_id[:8]}: its {len(cycle.pushes)} push runs ended {pushed:.0f} s "
                    f"after it (> {p:.0f} s)",
                )
        starts = [self.origin] + [cycle.sweep.created for cycle in self.cycles]
        for before, after in itertools.pairwise(starts):
            if after - before > 1.5 * p:
                self.violate("cadence", f"no sweep started for {after - before:.0f} s (> {1.5 * p:.0f} s)")
        self.waits = queue_waits(runs, now)
        for run, wait in self.waits:
            if wait > p:
                self.violate(
                    "cadence", f"{run.job} run {run.run_id[:8]} waited {wait:.0f} s to start (> {p:.0f} s)"
                )
        for name, tick, delay in schedule_delays(self.expected_ticks, runs, now):
            if delay is None or delay > p:
                late = "never started" if delay is None else f"started {delay:.0f} s late"
                self.violate(
                    "cadence", f"schedule {name} tick {time.strftime('%H:%M', time.gmtime(tick))} {late}"
                )
        # convergence
        for report in self.reports:
            if not report.ok:
                examples = "; ".join(
                    f"{sku}: shows {shown}, expected {want}" for sku, shown, want in report.mismatched[:3]
                )
                self.violate(
                    "convergence",
                    f"{report.label}: {len(report.mismatched)} of {report.checked} SKUs differ ({examples})",
                )
        # exactly once
        # Lost: not shown three periods on (two is the convergence bound, checked above; a change seen
        # later than that is late, one never seen is lost).
        self.latency = latencies(self.timeline, self.log, end=now, horizon=3 * p, held=self.held_at_end)
        lost = [item for item in self.latency if item.status == "lost"]
        if lost:
            sample = ", ".join(f"{item.sku} {item.expected.describe()}" for item in lost[:3])
            self.violate(
                "exactly once",
                f"{len(lost)} changes not on the storefront three periods later, nor superseded or held "
                f"(lost, or still queued at the end: {sample})",
            )
        duplicates = self.log.duplicates()
        if duplicates:
            self.violate("exactly once", f"{len(duplicates)} SKU versions applied twice: {duplicates[:3]}")
        for counter in ("bad_signatures", "repeated_versions"):
            if self.counters.get(counter):
                self.violate("exactly once", f"storefront counted {self.counters[counter]} {counter}")
        # failures and alerts
        self.failed = [run for run in runs if run.status == "FAILURE"]
        for run in self.failed:
            if explained_by(run, self.windows, grace=p) is None:
                self.violate("failures", f"{run.job} run {run.run_id[:8]} failed; no fault explains it")
        self.alert_summary = alert_report(self.alerts, self.windows, grace=2 * p)
        for problem in self.alert_summary.problems:
            self.violate("alerts", problem)
        # logs, secrets, processes
        out = self.stack.log("daemon", "out").read_text(errors="replace").splitlines()
        self.logs = log_report(out, runs)
        if self.logs.broken:
            self.violate("logs", f"{len(self.logs.broken)} JSON lines do not parse: {self.logs.broken[0]}")
        if self.logs.runs_without_lines:
            self.violate("logs", f"{len(self.logs.runs_without_lines)} finished runs have no JSON log line")
        if self.logs.runs_without_partition:
            self.violate("logs", f"{len(self.logs.runs_without_partition)} partitioned runs' lines lack it")
        for path in self.folder.rglob("*"):
            if path.is_file() and self.token.encode() in path.read_bytes():
                self.violate("secrets", f"the alert webhook token is in {path.relative_to(self.folder)}")
        for pid, command in self.leftovers:
            self.violate("processes", f"left running after the stop: pid {pid} {command[:120]}")

    def dump(self, path: Path) -> None:
        """What the soak observed, for a human looking into a failure (kept with the logs)."""
        statuses: dict[str, int] = {}
        for item in self.latency:
            statuses[item.status] = statuses.get(item.status, 0) + 1
        record = {
            "origin": self.origin,
            "period": self.period,
            "violations": self.violations,
            "faults": [vars(window) | {"jobs": sorted(window.jobs), "checks": sorted(window.checks)}
                       for window in self.windows],
            "convergence": [
                {"label": r.label, "at": r.at, "checked": r.checked, "held": r.held[:200],
                 "mismatched": r.mismatched[:200], "mismatched_count": len(r.mismatched)}
                for r in self.reports
            ],
            "latency": statuses,
            "alerts": self.alerts,
            "runs": sorted((vars(run) | {"tags": dict(run.tags)} for run in self.runs.values()),
                           key=lambda run: run["created"]),
            "counters": self.counters,
            "notes": self.notes,
        }  # fmt: skip
        path.write_text(json.dumps(record, indent=1, default=str))

    def result(self) -> str:
        """The result line."""
        p = self.period
        shown = [item for item in self.latency if item.status == "shown" and item.seconds is not None]
        steady = [item.seconds for item in shown if not fault_affected(item, self.windows, p)]
        steady_p95 = p95([s for s in steady if s is not None])
        every_p95 = p95([item.seconds for item in shown if item.seconds is not None])
        statuses: dict[str, int] = {}
        for item in self.latency:
            statuses[item.status] = statuses.get(item.status, 0) + 1
        runs = [run for run in self.runs.values() if run.created >= self.origin - 1]
        sweeps = len(self.cycles) or 1
        waits = [wait for _, wait in self.waits]
        sweep_p95 = p95([cycle.sweep_seconds(self.end) for cycle in self.cycles])
        pushes_p95 = p95([s for cycle in self.cycles if (s := cycle.push_seconds(self.end)) is not None])
        explained = sum(1 for run in self.failed if explained_by(run, self.windows, grace=p) is not None)
        held = {sku: agrees for report in self.reports for sku, _, agrees in report.held}
        ratio = (steady_p95 or every_p95 or float("nan")) / p
        alerts, recoveries = self.alert_summary.alerts.values(), self.alert_summary.recoveries.values()
        parts = [
            f"p95 change->storefront {fmt(steady_p95)} s over {len(steady)} changes outside faults "
            f"(all {len(shown)}: {fmt(every_p95)} s; {describe(statuses)})",
            f"period {p:.0f} s",
            f"cycles {len(self.cycles)}, runs per cycle {len(runs) / sweeps:.1f}",
            f"sweep run p95 {fmt(sweep_p95)} s ({len(self.slowed)} over a period, slowed by faults), "
            f"push runs done p95 {fmt(pushes_p95)} s after it",
            f"queue wait p95 {fmt(p95(waits))} s (max {fmt(max(waits, default=None))} s)",
            f"duplicates {len(self.log.duplicates())}, bad signatures {self.counters.get('bad_signatures')}, "
            f"resends answered 409 {self.counters.get('duplicates')}",
            f"failures {len(self.failed)} ({explained} explained by faults)",
            f"alerts {sum(alerts)} + {sum(recoveries)} recoveries",
            f"convergence {sum(r.ok for r in self.reports)}/{len(self.reports)} checks, held {len(held)} "
            f"(the rules here agree on {sum(held.values())})",
            f"JSON lines {self.logs.run_lines} run + {self.logs.daemon_lines} daemon",
            f"left processes {len(self.leftovers)}",
            f"{self.skus} SKUs, {self.minutes:g} min",
            f"broken: {', '.join(sorted(self.violations)) or 'none'}",
        ]
        detail = "; ".join(parts)
        return line(NAME, ratio, TARGET, detail)


def fmt(value: float | None) -> str:
    """Seconds for the detail ("-" when there is nothing to measure)."""
    return "-" if value is None else f"{value:.0f}"


def describe(counts: dict[str, int]) -> str:
    """status=count, sorted."""
    return " ".join(f"{name} {count}" for name, count in sorted(counts.items()))


def run() -> str:
    """Run the soak; print violations to stderr and exit non-zero when an invariant broke."""
    minutes = float(os.environ.get("BENCH_SOAK_MINUTES", "5"))
    database = PostgresDatabase()
    problem = database.reachable()
    if problem:
        if os.environ.get("CI"):
            raise SystemExit(f"soak: {problem}: the soak must run in CI")
        return f"{NAME}: skipped ({problem}; start PostgreSQL or set BENCH_SOAK_PG_URL)"
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    soak = Soak(minutes=minutes, skus=scaled(2000, 100), folder=folder)
    soak.stack.database = database
    try:
        soak.execute()
    except BaseException:
        print(f"soak: aborted; logs kept in {folder}", file=sys.stderr)
        raise
    result = soak.result()
    soak.dump(folder / "soak.json")
    keep = bool(os.environ.get("BENCH_SOAK_KEEP")) or bool(soak.violations)
    for invariant, problems in sorted(soak.violations.items()):
        for problem in problems[:20]:
            print(f"soak: BROKEN {invariant}: {problem}", file=sys.stderr)
        if len(problems) > 20:
            print(f"soak: BROKEN {invariant}: ... and {len(problems) - 20} more", file=sys.stderr)
    for report in soak.reports:
        for sku, reason, agrees in report.held[:10]:
            verdict = "the rules here agree" if agrees else "the rules here do not hold it"
            print(f"soak: held ({report.label}): {sku}: {reason} ({verdict})", file=sys.stderr)
    if keep:
        print(f"soak: logs kept in {folder}", file=sys.stderr)
    else:
        shutil.rmtree(folder, ignore_errors=True)
    if soak.violations:
        print(result, flush=True)
        raise SystemExit(1)
    return result
