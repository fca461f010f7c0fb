"""The soak's fault timetable: which fault starts and clears when, and what it is allowed to break.

Times are seconds after the soak starts, in units of the sweep period P. Every fault clears at least two
periods before the end, so convergence after it is checked inside the run. A run of at least
`SEQUENTIAL_PERIODS` periods injects the faults one after another, each followed by two periods to
converge and one of steady state; a shorter run (at least `COMPACT_PERIODS`) overlaps them:

    compact (5 P):   0      P          1.5P      2P          2.5P          3P        5P
                     warm-up | beta down ------------------------------------ up | converge
                             | CDN re-keyed ------- fixed                        |
                             |          | alpha 429 storm | storefront 503 -- | wipe |
"""

from __future__ import annotations

from dataclasses import dataclass

from bench._soak_account import PUSH_JOB, RECONCILE_JOB, SWEEP_JOB, FaultWindow

COMPACT_PERIODS = 5
SEQUENTIAL_PERIODS = 21
FILES_JOB = "supplier_files_job"
# The soak launches the CDN refresh itself during a re-key (the schedule runs every 30 minutes).
ASSET_JOB = "__ASSET_JOB"


@dataclass(frozen=True)
class Fault:
    """One fault: kind, what it hits, and when it starts and clears (seconds after the start)."""

    kind: str  # supplier_outage | rate_limit_storm | storefront_503 | storefront_wipe | cdn_rekey
    target: str
    start: float
    end: float

    def window(self, origin: float) -> FaultWindow:
        """The fault in wall-clock time, with the failed runs and alerts it explains."""
        jobs: frozenset[str] = frozenset()
        checks: frozenset[str] = frozenset()
        if self.kind in ("supplier_outage", "rate_limit_storm"):
            checks = frozenset({f"supplier_offers/{self.target}:supplier_reachable"})
        elif self.kind == "storefront_503":
            # Every job that pushes or reads the storefront: the sweep's own push, a push run, a
            # reconcile run; and the acknowledgement check of the sync that met the 503s.
            jobs = frozenset({SWEEP_JOB, PUSH_JOB, RECONCILE_JOB})
            checks = frozenset({"storefront_sync:storefront_acknowledged"})
        elif self.kind == "cdn_rekey":
            jobs = frozenset({FILES_JOB, ASSET_JOB})
        return FaultWindow(self.kind, self.target, origin + self.start, origin + self.end, jobs, checks)

    def sandbox_faults(self) -> dict[str, dict[str, object]] | None:
        """The sandbox fault settings that start it (None: not a fault-switch fault)."""
        if self.kind == "supplier_outage":
            return {self.target: {"outage": True, "retry_after": 1}}
        if self.kind == "rate_limit_storm":
            # A supplier throttling hard: one request per second, 429 + Retry-After for the rest.
            return {self.target: {"rate_limit_rps": 1, "rate_limit_burst": 1}}
        if self.kind == "storefront_503":
            return {"storefront": {"outage": True, "retry_after": 1}}
        if self.kind == "cdn_rekey":
            return {self.target: {"rekeyed": True}}
        return None


def timetable(duration: float, period: float) -> list[Fault]:
    """The faults for a soak of `duration` seconds with sweep period `period` (ValueError if too short)."""
    periods = duration / period
    if periods < COMPACT_PERIODS:
        raise ValueError(
            f"a soak needs at least {COMPACT_PERIODS} sweep periods ({COMPACT_PERIODS * period:.0f} s) "
            f"to inject its faults and see the stack converge; got {duration:.0f} s"
        )
    p = period
    if periods < SEQUENTIAL_PERIODS:
        return [
            Fault("supplier_outage", "beta", p, 3 * p),
            Fault("cdn_rekey", "delta", p, 2 * p),
            Fault("rate_limit_storm", "alpha", 1.5 * p, 2 * p),
            Fault("storefront_503", "storefront", 2 * p, 2.5 * p),
            Fault("storefront_wipe", "storefront", 2.5 * p, 2.5 * p),
        ]
    faults = []
    at = 2 * p  # warm-up: two steady periods first
    for kind, target, length in (
        ("supplier_outage", "beta", 2 * p),
        ("rate_limit_storm", "alpha", 0.5 * p),
        ("storefront_503", "storefront", 0.5 * p),
        ("storefront_wipe", "storefront", 0.0),
        ("cdn_rekey", "delta", p),
    ):
        faults.append(Fault(kind, target, at, at + length))
        at += length + 3 * p  # two periods to converge, one steady
    return faults


def convergence_checks(faults: list[Fault], duration: float, period: float) -> list[tuple[float, str]]:
    """(time, label) of each convergence check: two periods after each fault clears, and at the end."""
    due: dict[float, list[str]] = {duration: []}
    for fault in faults:
        at = fault.end + 2 * period
        if at > duration + 1e-9:
            raise ValueError(f"{fault.kind} clears less than two periods before the end of the soak")
        due.setdefault(min(at, duration), []).append(f"{fault.kind}({fault.target})")
    return [
        (
            at,
            ("after " + ", ".join(labels) if labels else "steady state")
            + (" (end)" if at == duration else ""),
        )
        for at, labels in sorted(due.items())
    ]
