"""A small code location for the run-worker and database outage tests: a slow asset that logs while it
works (every event is a write to the instance's database), one run at a time through a pool."""

import os
import time
from pathlib import Path

from dagster import AssetExecutionContext, Definitions, MaterializeResult, asset, define_asset_job

WORK_SECONDS = float(os.environ.get("OUTAGE_PROBE_SECONDS", "20"))
SECONDS_TAG = "probe/seconds"  # a run's own work time, else OUTAGE_PROBE_SECONDS


@asset(pool="storefront")
def slow_probe(context: AssetExecutionContext) -> MaterializeResult:
    """Works for a while, logging twice a second; records each attempt (and its pid) in a marker file."""
    marker = Path(os.environ["OUTAGE_MARKER_DIR"]) / f"{context.run_id}.started"
    marker.write_text(str(os.getpid()))
    deadline = time.monotonic() + float(context.run.tags.get(SECONDS_TAG, WORK_SECONDS))
    beats = 0
    while time.monotonic() < deadline:
        beats += 1
        context.log.info(f"working, beat {beats}")
        time.sleep(0.5)
    return MaterializeResult(metadata={"beats": beats})


probe_job = define_asset_job("slow_probe_job", selection=[slow_probe])
defs = Definitions(assets=[slow_probe], jobs=[probe_job])
