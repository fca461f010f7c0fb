"""Run logs as JSON lines (one object per event) for Loki or jq, wired in through the instance config.

`dagster.yaml` and `deploy/postgres/dagster.yaml` attach `JsonLinesHandler` with `JsonLogFormatter`
to every run through Dagster's `python_logs.dagster_handler_config` (docs/pricing_operations.md, "Logs").
Every Dagster event and every `context.log` call of a run becomes one line:

    {"timestamp": "2026-12-01T10:00:00.123456Z", "level": "debug", "logger": "dagster",
     "message": "Materialized value best_offers.", "run_id": "…", "job": "price_sweep_job",
     "event_type": "ASSET_MATERIALIZATION", "step": "best_offers", "asset_key": "best_offers",
     "partition": "batch-003"}

`timestamp`, `level` and `logger` are named and written as `dagster-daemon --log-format json` writes
its own lines, so one Loki query covers both. `partition` is the event's own partition, else the run's
(`dagster/partition`), else the run's range as `<start>...<end>`. Nothing else of the run is copied
(no tags, no config, no metadata values), so no secret can reach the log through this formatter.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Where the lines go: a file path, "stdout" or "stderr". Overrides the destination in the YAML.
DESTINATION_ENV = "DAGSTER_JSON_LOG"
# The attributes Dagster's log manager sets on every record of a run (names are Dagster's own).
_META_ATTR = "dagster_meta"
_EVENT_ATTR = "dagster_event"
_PARTITION_TAG = "dagster/partition"
_RANGE_START_TAG = "dagster/asset_partition_range_start"
_RANGE_END_TAG = "dagster/asset_partition_range_end"


def _iso(created: float) -> str:
    """A record time as ISO 8601 UTC with microseconds and a Z, as structlog's TimeStamper writes it."""
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _partition(event: Any, tags: dict[str, str]) -> str | None:
    partition = getattr(event, "partition", None) if event is not None else None
    if partition:
        return str(partition)
    if tags.get(_PARTITION_TAG):
        return tags[_PARTITION_TAG]
    if tags.get(_RANGE_START_TAG) and tags.get(_RANGE_END_TAG):
        return f"{tags[_RANGE_START_TAG]}...{tags[_RANGE_END_TAG]}"
    return None


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, message, run id, job, step, asset, partition."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (no newline inside: tracebacks are escaped)."""
        meta: dict[str, Any] = getattr(record, _META_ATTR, None) or {}
        event = meta.get(_EVENT_ATTR) or getattr(record, _EVENT_ATTR, None)
        tags = dict(meta.get("job_tags") or {})
        asset_key = getattr(event, "asset_key", None) if event is not None else None
        entry: dict[str, Any] = {
            "timestamp": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            # Dagster rewrites record.msg into "job - run id - step - EVENT - text"; the fields below
            # carry those parts, so the message is the original text alone.
            "message": meta.get("orig_message", record.getMessage()),
            "run_id": meta.get("run_id"),
            "job": meta.get("job_name"),
            "event_type": getattr(event, "event_type_value", None) if event is not None else None,
            "step": meta.get("step_key"),
            "asset_key": asset_key.to_user_string() if asset_key is not None else None,
            "partition": _partition(event, tags),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class JsonLinesHandler(logging.Handler):
    """Writes each formatted record as one line to a file (appended, one write per line) or a stream.

    `destination` is a path (environment variables such as `$DAGSTER_HOME` are expanded), `stdout` or
    `stderr`; `$DAGSTER_JSON_LOG` overrides it. Several run processes append to the same file safely:
    each line is a single `write` to a file opened with O_APPEND, so lines never interleave.
    """

    def __init__(self, destination: str = "stdout", level: int | str = logging.NOTSET) -> None:
        super().__init__(level)
        chosen = os.environ.get(DESTINATION_ENV) or destination
        self.destination = chosen
        self._path: Path | None = None
        if chosen not in ("stdout", "stderr"):
            self._path = Path(os.path.expanduser(os.path.expandvars(chosen)))
            self._path.parent.mkdir(parents=True, exist_ok=True)
        self.setFormatter(JsonLogFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        """Format the record and write it as one line."""
        try:
            line = self.format(record) + "\n"
            if self._path is None:
                stream = sys.stdout if self.destination == "stdout" else sys.stderr
                stream.write(line)
                stream.flush()
                return
            # Opened per line: Dagster re-applies the handler config (closing older handlers) whenever
            # a run creates a log manager, so a long-lived descriptor could be closed under a writer.
            descriptor = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(descriptor, line.encode())
            finally:
                os.close(descriptor)
        except Exception:
            self.handleError(record)
