"""The soak's bookkeeping, as pure functions over what it observed (so each is unit-tested).

- `Timeline`: the expected storefront entry of every SKU over time, from the ground truth at the start
  and every change of the sandbox's price stream (bench/_soak_expect.py computes each entry).
- `StorefrontLog`: what the storefront applied, push by push, and when it lost its state.
- `latencies`: for each change that moved a SKU's expected entry, when the storefront first showed it.
- `convergence`: whether the live storefront holds, for every SKU, an expected entry of a time window
  or a change the project held in that window (`HoldLog`: the project's holds over time).
- cadence (`cycles`, `queue_waits`, `schedule_delays`), failures and alerts explained by the fault
  timetable, and the JSON log lines.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bench._soak_expect import Expected, Offer, Rules, batch_held, expected_entry, held_reason, shows

# The job the price_sweep sensor launches: the sweep and its push in one run.
SWEEP_JOB = "price_cycle_job"
PUSH_JOB = "storefront_sync_job"
RECONCILE_JOB = "storefront_reconcile_job"
TRIGGER_TAG = "storefront/trigger_run_id"
SCHEDULE_TAG = "dagster/schedule_name"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
WAITING = ("QUEUED", "NOT_STARTED", "STARTING")


def p95(values: Sequence[float]) -> float | None:
    """The 95th percentile (nearest rank), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


Hold = tuple[Decimal | None, str]  # a held change: the price the project holds back, and why


# ------------------------------------------------------------------ expected entries over time


class Timeline:
    """Per active SKU, the expected storefront entry and the times it changed."""

    def __init__(
        self,
        catalog: Mapping[str, tuple[str | None, bool]],
        offers: Mapping[str, Mapping[str, Offer]],
        rules: Rules,
        start: float,
    ) -> None:
        self.rules = rules
        self.category = {sku: category for sku, (category, active) in catalog.items() if active}
        self.offers: dict[str, dict[str, Offer]] = {sku: {} for sku in self.category}
        for supplier, listing in offers.items():
            for sku, offer in listing.items():
                if sku in self.offers:
                    self.offers[sku][supplier] = offer
        self.times: dict[str, list[float]] = {}
        self.entries: dict[str, list[Expected]] = {}
        self.causes: dict[str, list[str]] = {}  # the supplier whose change moved the entry
        for sku in self.category:
            self.times[sku] = [start]
            self.entries[sku] = [expected_entry(sku, self.category[sku], self.offers[sku], rules)]
            self.causes[sku] = [""]

    def apply(self, change: Mapping[str, Any]) -> bool:
        """Apply one stream change (at, supplier, sku, price, currency, stock); True if the entry moved."""
        sku = change["sku"]
        if sku not in self.offers:
            return False  # a retired SKU: never priced
        offer = Offer(Decimal(str(change["price"])), str(change["currency"]), change["stock"])
        self.offers[sku][change["supplier"]] = offer
        entry = expected_entry(sku, self.category[sku], self.offers[sku], self.rules)
        if entry == self.entries[sku][-1]:
            return False
        self.times[sku].append(float(change["at"]))
        self.entries[sku].append(entry)
        self.causes[sku].append(str(change["supplier"]))
        return True

    def at(self, sku: str, when: float) -> Expected:
        """The expected entry in effect at `when`."""
        index = bisect.bisect_right(self.times[sku], when) - 1
        return self.entries[sku][max(index, 0)]

    def during(self, sku: str, start: float, end: float) -> list[Expected]:
        """Every expected entry in effect at some instant of [start, end]."""
        times = self.times[sku]
        first = max(bisect.bisect_right(times, start) - 1, 0)
        last = bisect.bisect_right(times, end)
        return self.entries[sku][first:last] or [self.entries[sku][first]]

    def changes(self) -> Iterable[tuple[str, int, float, Expected, str]]:
        """(sku, index, time, entry, supplier that caused it) of every change after the start."""
        for sku, times in self.times.items():
            for index in range(1, len(times)):
                yield sku, index, times[index], self.entries[sku][index], self.causes[sku][index]


# ------------------------------------------------------------------ what the storefront applied


@dataclass
class StorefrontLog:
    """Applied pushes per SKU, in order, and the times the storefront lost its state."""

    applied: dict[str, list[tuple[float, dict[str, Any]]]] = field(default_factory=dict)
    wipes: list[float] = field(default_factory=list)
    pushes: int = 0

    def add(self, push: Mapping[str, Any]) -> None:
        """One applied push as the sandbox logs it: received_at and its price entries."""
        self.pushes += 1
        for entry in push["prices"]:
            self.applied.setdefault(entry["sku"], []).append((float(push["received_at"]), dict(entry)))

    def wipe(self, when: float) -> None:
        """The storefront lost every price at `when`."""
        self.wipes.append(when)

    def _upto(self, sku: str, when: float) -> list[tuple[float, dict[str, Any]]]:
        return [item for item in self.applied.get(sku, []) if item[0] <= when]

    def last_pushed_price(self, sku: str, when: float = math.inf) -> Decimal | None:
        """The price of the newest entry the storefront acknowledged by `when` (a wipe does not undo it)."""
        for _, entry in reversed(self._upto(sku, when)):
            if entry.get("price") is not None:
                return Decimal(str(entry["price"]))
        return None

    def shown(self, sku: str, when: float) -> dict[str, Any] | None:
        """The entry the storefront showed at `when` (None after a wipe until the next push of the SKU)."""
        wiped = max((t for t in self.wipes if t <= when), default=-math.inf)
        items = [item for item in self._upto(sku, when) if item[0] >= wiped]
        return items[-1][1] if items else None

    def first_showing(self, sku: str, after: float, expected: Expected, rules: Rules) -> float | None:
        """When the storefront first applied an entry showing `expected`, at or after `after`."""
        for when, entry in self.applied.get(sku, []):
            if when >= after and shows(entry, expected, rules):
                return when
        return None

    def duplicates(self) -> list[tuple[str, int, int]]:
        """(sku, version, times) of a SKU version applied more than once without a wipe in between."""
        found = []
        for sku, items in self.applied.items():
            counts: Counter[tuple[int, int]] = Counter()
            for when, entry in items:
                epoch = sum(1 for t in self.wipes if t <= when)
                counts[(epoch, int(entry.get("version") or 0))] += 1
            found += [(sku, version, n) for (_, version), n in counts.items() if n > 1]
        return sorted(found)


# ------------------------------------------------------------------ latency of each change


@dataclass(frozen=True)
class Latency:
    """What became of one change of a SKU's expected entry."""

    sku: str
    at: float
    expected: Expected
    status: str  # shown | superseded | held | noop | pending | lost
    seconds: float | None = None
    supplier: str = ""  # whose offer change moved the expected entry


def latencies(
    timeline: Timeline,
    log: StorefrontLog,
    *,
    end: float,
    horizon: float,
    held: Mapping[str, Hold] | None = None,
) -> list[Latency]:
    """Each change's fate: shown (with its latency), superseded by a later change before it showed, a
    no-op for the storefront, held by the guard, or not shown: `lost` when older than end - horizon,
    else `pending` (too recent to judge).

    `held` (sku -> price, reason: the project's held rows) also counts as held: the guard's threshold
    compared here in Decimal can land a hair away from the project's on an exact boundary (30.0 %).
    """
    held = held or {}
    rules = timeline.rules
    found = []
    for sku, index, when, expected, supplier in timeline.changes():
        times = timeline.times[sku]
        following = times[index + 1] if index + 1 < len(times) else math.inf
        if shows(log.shown(sku, when), expected, rules):
            status, seconds = "noop", None
        elif (hit := log.first_showing(sku, when, expected, rules)) is not None and hit < following:
            status, seconds = "shown", hit - when
        elif following <= end:
            status, seconds = "superseded", None
        elif held_reason(expected, log.last_pushed_price(sku, when), rules) or (
            sku in held and held[sku][0] == expected.price
        ):
            status, seconds = "held", None
        elif when > end - horizon:
            status, seconds = "pending", None
        else:
            status, seconds = "lost", None
        found.append(Latency(sku, when, expected, status, seconds, supplier))
    return found


def fault_affected(latency: Latency, windows: Iterable[FaultWindow], period: float) -> bool:
    """Whether a fault may have delayed this change: one of its supplier's faults, or a storefront
    fault, active while the change was on its way (from the change until it showed), or cleared less
    than one period before the change (the recovery's own cycle)."""
    shown_at = latency.at + (latency.seconds if latency.seconds is not None else math.inf)
    for window in windows:
        if (
            window.kind in ("supplier_outage", "rate_limit_storm", "cdn_rekey")
            and window.target != latency.supplier
        ):
            continue
        if window.start <= shown_at and latency.at <= window.end + period:
            return True
    return False


# ------------------------------------------------------------------ convergence


@dataclass
class HoldLog:
    """The project's held changes over time: each sample replaces the last from its time on."""

    times: list[float] = field(default_factory=list)
    samples: list[dict[str, Hold]] = field(default_factory=list)

    def add(self, at: float, held: Mapping[str, Hold]) -> None:
        """The holds seen at `at` (kept only when they differ from the last sample)."""
        if self.samples and self.samples[-1] == held:
            return
        self.times.append(at)
        self.samples.append(dict(held))

    def during(self, start: float, end: float) -> dict[str, list[Hold]]:
        """Every hold in effect at some instant of [start, end], per SKU, in the order seen."""
        first = max(bisect.bisect_right(self.times, start) - 1, 0)
        last = bisect.bisect_right(self.times, end)
        found: dict[str, list[Hold]] = {}
        for sample in self.samples[first:last]:
            for sku, hold in sample.items():
                if hold not in found.setdefault(sku, []):
                    found[sku].append(hold)
        return found


@dataclass
class Convergence:
    """One check: SKUs checked, the held changes excepted, and the SKUs that do not match."""

    at: float
    since: float
    label: str
    checked: int = 0
    held: list[tuple[str, str, bool]] = field(default_factory=list)  # sku, reason, the rules agree
    mismatched: list[tuple[str, str, str]] = field(default_factory=list)  # sku, shown, expected

    @property
    def ok(self) -> bool:
        """Whether every SKU matched or is a held change."""
        return not self.mismatched


def _describe(entry: Mapping[str, Any] | None) -> str:
    if entry is None:
        return "nothing"
    if entry.get("available") is False:
        return "unavailable"
    return f"{entry.get('price')} from {entry.get('supplier')}"


def _keeps(entry: Mapping[str, Any] | None, last_pushed: Decimal | None) -> bool:
    """Whether a storefront entry still shows the last price the storefront acknowledged."""
    price = None if entry is None else entry.get("price")
    return price is not None and last_pushed is not None and Decimal(str(price)) == last_pushed


def convergence(
    timeline: Timeline,
    live: Mapping[str, Mapping[str, Any]],
    log: StorefrontLog,
    held: Mapping[str, Sequence[Hold]],
    *,
    since: float,
    now: float,
    label: str,
) -> Convergence:
    """Does the storefront hold, for every active SKU, an entry expected at some instant of [since, now]?

    A SKU that does not is excepted only when the project held that change in the window: `held`
    (sku -> every hold of the window, from the project's storefront_prices: `HoldLog.during`) has it at
    a price expected in the window, and the storefront still shows the last price it acknowledged (what
    the hold keeps). A hold the project released at the end of the window still counts: until the push
    that follows, the storefront rightly shows the price the hold kept. Whether the rules computed here
    agree (per SKU against the last pushed price, or by the batch rule) is recorded with it. Anything
    else is a mismatch.
    """
    rules = timeline.rules
    report = Convergence(at=now, since=since, label=label, checked=len(timeline.entries))
    current = {sku: timeline.at(sku, now) for sku in timeline.entries}
    last = {sku: log.last_pushed_price(sku) for sku in timeline.entries}
    by_batch = batch_held(current, last, rules)
    for sku in timeline.entries:
        window = timeline.during(sku, since, now)
        entry = live.get(sku)
        if any(shows(entry, expected, rules) for expected in window):
            continue
        reason = next(
            (why for price, why in held.get(sku, ()) if any(e.price == price for e in window)), None
        )
        if reason is not None and _keeps(entry, last[sku]):
            agrees = sku in by_batch or any(held_reason(expected, last[sku], rules) for expected in window)
            report.held.append((sku, reason, agrees))
        else:
            report.mismatched.append((sku, _describe(entry), current[sku].describe()))
    return report


# ------------------------------------------------------------------ runs: cadence and failures


@dataclass(frozen=True)
class RunInfo:
    """A run as the webserver reports it (times in unix seconds)."""

    run_id: str
    job: str
    status: str
    created: float
    started: float | None
    ended: float | None
    tags: Mapping[str, str]

    def partitioned(self) -> bool:
        """Whether the run targets a partition or a partition range."""
        return PARTITION_TAG in self.tags or RANGE_START_TAG in self.tags


def queue_waits(runs: Iterable[RunInfo], now: float) -> list[tuple[RunInfo, float]]:
    """(run, seconds from creation to start; for a run still waiting, until now)."""
    waits = []
    for run in runs:
        if run.started is not None:
            waits.append((run, run.started - run.created))
        elif run.status in WAITING:
            waits.append((run, now - run.created))
    return waits


@dataclass
class Cycle:
    """One sweep run and the push runs its prices triggered."""

    sweep: RunInfo
    pushes: list[RunInfo]

    def sweep_seconds(self, now: float) -> float:
        """Creation of the sweep run to its end (to now while it runs)."""
        return (self.sweep.ended or now) - self.sweep.created

    def push_seconds(self, now: float) -> float | None:
        """End of the sweep run to the end of its last push run (None: no push run)."""
        if not self.pushes or self.sweep.ended is None:
            return None
        if any(run.ended is None for run in self.pushes):
            return now - self.sweep.ended
        return max(run.ended or now for run in self.pushes) - self.sweep.ended


def cycles(runs: Sequence[RunInfo]) -> list[Cycle]:
    """Sweep runs in creation order with their push runs (by trigger tag, else by time window)."""
    sweeps = sorted((run for run in runs if run.job == SWEEP_JOB), key=lambda run: run.created)
    pushes = [run for run in runs if run.job == PUSH_JOB]
    tagged = any(TRIGGER_TAG in run.tags for run in pushes)
    found = []
    for index, sweep in enumerate(sweeps):
        if tagged:
            mine = [run for run in pushes if run.tags.get(TRIGGER_TAG) == sweep.run_id]
        else:
            start = sweep.ended or math.inf
            stop = sweeps[index + 1].ended if index + 1 < len(sweeps) else None
            mine = [run for run in pushes if start <= run.created < (stop or math.inf)]
        found.append(Cycle(sweep, sorted(mine, key=lambda run: run.created)))
    return found


def slowed_by_fault(run: RunInfo, windows: Iterable[FaultWindow], now: float) -> FaultWindow | None:
    """A fault that was on while `run` ran (created to ended), other than an instant one (a wipe)."""
    for window in windows:
        if window.end > window.start and window.start <= (run.ended or now) and run.created <= window.end:
            return window
    return None


def schedule_delays(
    expected: Mapping[str, Sequence[float]], runs: Sequence[RunInfo], now: float
) -> list[tuple[str, float, float | None]]:
    """(schedule, tick time, seconds from the tick to its run's start; None: no run started)."""
    found = []
    for name, ticks in expected.items():
        launched = sorted(
            (run for run in runs if run.tags.get(SCHEDULE_TAG) == name), key=lambda run: run.created
        )
        for tick in ticks:
            run = next((r for r in launched if r.created >= tick - 1), None)
            if run is not None:
                launched.remove(run)
            start = run.started if run is not None else None
            found.append((name, tick, None if start is None else start - tick))
    return found


@dataclass(frozen=True)
class FaultWindow:
    """A fault as injected, and which failures and alerts it explains."""

    kind: str
    target: str
    start: float
    end: float
    jobs: frozenset[str] = frozenset()
    checks: frozenset[str] = frozenset()  # "<asset key>:<check name>"

    @property
    def label(self) -> str:
        """Short text for reports."""
        return f"{self.kind}({self.target})"


def explained_by(run: RunInfo, windows: Iterable[FaultWindow], grace: float) -> FaultWindow | None:
    """The fault window that explains a failed run: its job, and the run overlapping the window."""
    for window in windows:
        if (
            run.job in window.jobs
            and run.created <= window.end + grace
            and (run.ended or math.inf) >= window.start
        ):
            return window
    return None


# ------------------------------------------------------------------ alerts


_ALERT = re.compile(r"ALERT (?P<subject>.+?) failed")
_RECOVERED = re.compile(r"RECOVERED (?P<subject>.+?) is fine again")


def parse_alert(text: str) -> tuple[str, str] | None:
    """("alert" | "recovered", subject) of a message of the alerts sensor; None for anything else."""
    if match := _ALERT.search(text):
        return "alert", match["subject"]
    if match := _RECOVERED.search(text):
        return "recovered", match["subject"]
    return None


def subject_of(window: FaultWindow) -> set[str]:
    """The alert subjects a fault window explains."""
    subjects = {f"job {job}" for job in window.jobs}
    for check in window.checks:
        asset, name = check.rsplit(":", 1)
        subjects.add(f"check {name} on {asset}")
    return subjects


@dataclass
class AlertReport:
    """Alerts and recoveries received, per subject, and what is wrong with them."""

    alerts: Counter[str] = field(default_factory=Counter)
    recoveries: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


def alert_report(
    received: Sequence[Mapping[str, Any]], windows: Sequence[FaultWindow], *, grace: float
) -> AlertReport:
    """Count alerts and recoveries; every alert must be explained by a fault and recovered afterwards.

    A supplier outage must raise exactly one alert and one recovery for its reachability check.
    """
    report = AlertReport()
    opened: dict[str, int] = {}
    for item in received:
        parsed = parse_alert(str(item["text"]))
        if parsed is None:
            report.problems.append(f"unrecognised alert: {item['text'][:120]}")
            continue
        kind, subject = parsed
        when = float(item["received_at"])
        if kind == "alert":
            report.alerts[subject] += 1
            opened[subject] = opened.get(subject, 0) + 1
            if not any(subject in subject_of(w) and w.start <= when <= w.end + grace for w in windows):
                report.problems.append(f"alert not explained by any fault: {subject}")
        else:
            report.recoveries[subject] += 1
            opened[subject] = opened.get(subject, 0) - 1
    for subject, still in opened.items():
        if still > 0:
            report.problems.append(f"alert without recovery: {subject}")
    for window in windows:
        if window.kind != "supplier_outage":
            continue
        for subject in subject_of(window):
            counts = (report.alerts[subject], report.recoveries[subject])
            if counts != (1, 1):
                report.problems.append(
                    f"{window.label}: {counts[0]} alerts and {counts[1]} recoveries for {subject} "
                    "(want 1 and 1)"
                )
    return report


# ------------------------------------------------------------------ JSON log lines


@dataclass
class LogReport:
    """How the process logs parsed: JSON lines by kind, non-JSON lines, and runs missing from the log."""

    run_lines: int = 0
    daemon_lines: int = 0
    broken: list[str] = field(default_factory=list)  # lines that start like JSON but do not parse
    text_lines: int = 0
    runs_without_lines: list[str] = field(default_factory=list)
    runs_without_partition: list[str] = field(default_factory=list)


def log_report(lines: Iterable[str], runs: Sequence[RunInfo]) -> LogReport:
    """Parse every line; each finished run must have JSON lines with its run id (and its partition)."""
    report = LogReport()
    by_run: dict[str, list[dict[str, Any]]] = {}
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("{"):
            report.text_lines += 1
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            report.broken.append(line[:200])
            continue
        if entry.get("run_id"):
            report.run_lines += 1
            by_run.setdefault(entry["run_id"], []).append(entry)
        else:
            report.daemon_lines += 1
    for run in runs:
        if run.ended is None:
            continue
        entries = by_run.get(run.run_id, [])
        if not entries:
            report.runs_without_lines.append(run.run_id)
        elif run.partitioned() and not any(entry.get("partition") for entry in entries):
            report.runs_without_partition.append(run.run_id)
    return report
