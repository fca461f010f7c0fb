"""The `alerts` sensor: run failures and failed asset checks, posted once per incident to a chat webhook.

Open-source Dagster sends no alerts. This sensor reads, after its cursor, every run that finished
(RUN_FAILURE and RUN_SUCCESS events, any code location of the instance) and the asset check
evaluations inside those runs, and keeps **incidents** in its cursor:

- a run incident per job: it opens when a run of the job fails and stays open while any partition (or
  partition range, or the job itself when unpartitioned) whose run failed has not succeeded since;
- a check incident per asset check: it opens when the check fails with ERROR severity (WARN too when
  the resource's `check_severity` is WARN) and closes when it passes again (per partition when the
  evaluation has one).

An incident posts one alert when it opens and one recovery when it closes, never one per tick or per
failed run. Messages are Slack-compatible (`{"text": ...}`) and go to the URL in `$ALERT_WEBHOOK_URL`
(or the file `$ALERT_WEBHOOK_URL_FILE` names): a secret, never logged, never in metadata or the cursor.
A message the webhook does not accept stays queued in the cursor and is retried at the next tick, in
order. Without a URL the sensor only keeps its cursor at the newest run (docs/pricing_operations.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal

import httpx
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    ConfigurableResource,
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    EventLogRecord,
    RunStatusChangeRecordsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from resources.secrets import read_secret

ALERT_URL_ENV = "ALERT_WEBHOOK_URL"
SENSOR_NAME = "alerts"
# Finished-run events read per tick and type; the rest are read by the next ticks.
EVENTS_PER_TICK = 200
# Undelivered messages kept while the webhook is down; older ones are dropped and counted.
MAX_QUEUED = 200
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
WHOLE = ("", "")  # the "range" of an unpartitioned run or check evaluation


class AlertDeliveryError(RuntimeError):
    """The webhook did not accept an alert; the message names the status, never the URL."""


class AlertWebhook(ConfigurableResource):
    """A Slack-compatible incoming webhook; its URL is a secret read from the environment when posting."""

    url_env: str = ALERT_URL_ENV
    timeout_seconds: float = 10.0
    # Failed checks of this severity and above alert; WARN checks flag data a person reviews in the UI
    # (e.g. orders without lines), which is not worth waking anyone for.
    check_severity: Literal["ERROR", "WARN"] = "ERROR"

    def _url(self) -> str | None:
        url = (read_secret(self.url_env) or "").strip()
        return url or None

    def configured(self) -> bool:
        """Whether a webhook URL is set."""
        return self._url() is not None

    def post(self, text: str) -> None:
        """Post `{"text": text}`; raise AlertDeliveryError unless the webhook answers 2xx."""
        url = self._url()
        if url is None:
            raise AlertDeliveryError(f"no webhook URL: set ${self.url_env}")
        try:
            response = httpx.post(url, json={"text": text}, timeout=self.timeout_seconds)
        except httpx.HTTPError as exc:
            # httpx's own message contains the URL: only the exception's type is reported.
            raise AlertDeliveryError(f"webhook unreachable ({type(exc).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise AlertDeliveryError(f"webhook answered HTTP {response.status_code}")


# ------------------------------------------------------------------ incidents (pure, in the cursor)


@dataclass
class Incident:
    """One open problem: what fails (a job or a check), since when, and which partition ranges still fail."""

    title: str
    opened_at: float
    run_id: str
    failing: list[list[str]] = field(default_factory=list)  # [start, end] ranges, ("", "") = whole


@dataclass
class AlertState:
    """The sensor's cursor: event positions, open incidents and messages not yet delivered."""

    after_failure: int | None = None
    after_success: int | None = None
    incidents: dict[str, Incident] = field(default_factory=dict)
    outbox: list[str] = field(default_factory=list)
    dropped: int = 0

    @classmethod
    def parse(cls, raw: str | None) -> AlertState:
        """Read a cursor (None or empty: a sensor that has not ticked yet)."""
        if not raw:
            return cls()
        data = json.loads(raw)
        incidents = {key: Incident(**value) for key, value in data.get("incidents", {}).items()}
        return cls(
            after_failure=data.get("after_failure"),
            after_success=data.get("after_success"),
            incidents=incidents,
            outbox=list(data.get("outbox", [])),
            dropped=int(data.get("dropped", 0)),
        )

    def dump(self) -> str:
        """The cursor as stored by Dagster."""
        return json.dumps(
            {
                "after_failure": self.after_failure,
                "after_success": self.after_success,
                "incidents": {key: asdict(value) for key, value in self.incidents.items()},
                "outbox": self.outbox,
                "dropped": self.dropped,
            },
            sort_keys=True,
        )

    @property
    def started(self) -> bool:
        """Whether the sensor has picked its starting point in the event log."""
        return self.after_failure is not None and self.after_success is not None

    def queue(self, text: str) -> None:
        """Add a message to the outbox, dropping (and counting) the oldest beyond MAX_QUEUED."""
        self.outbox.append(text)
        if len(self.outbox) > MAX_QUEUED:
            excess = len(self.outbox) - MAX_QUEUED
            del self.outbox[:excess]
            self.dropped += excess


def _covers(outer: Sequence[str], inner: Sequence[str]) -> bool:
    (o_start, o_end), (i_start, i_end) = outer, inner
    if (o_start, o_end) == WHOLE or (i_start, i_end) == WHOLE:
        return (o_start, o_end) == (i_start, i_end)
    return o_start <= i_start and i_end <= o_end


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _where(span: tuple[str, str]) -> str:
    if span == WHOLE:
        return ""
    return f" [{span[0]}]" if span[0] == span[1] else f" [{span[0]}...{span[1]}]"


def record_failure(
    state: AlertState, key: str, title: str, span: tuple[str, str], *, run_id: str, at: float, detail: str
) -> str | None:
    """Note a failure; return the alert text if it opens an incident (None while one is open)."""
    incident = state.incidents.get(key)
    if incident is not None:
        if not any(_covers(existing, span) for existing in incident.failing):
            incident.failing.append(list(span))
        return None
    state.incidents[key] = Incident(title=title, opened_at=at, run_id=run_id, failing=[list(span)])
    text = f":rotating_light: ALERT {title} failed{_where(span)}: {detail} (run {run_id}, {_stamp(at)})"
    state.queue(text)
    return text


def record_success(
    state: AlertState, key: str, span: tuple[str, str], *, run_id: str, at: float
) -> str | None:
    """Note a success; return the recovery text if it closes the incident."""
    incident = state.incidents.get(key)
    if incident is None:
        return None
    incident.failing = [kept for kept in incident.failing if not _covers(span, kept)]
    if incident.failing:
        return None
    del state.incidents[key]
    lasted = _duration(at - incident.opened_at)
    text = (
        f":white_check_mark: RECOVERED {incident.title} is fine again after {lasted} "
        f"(open since {_stamp(incident.opened_at)}, recovered in run {run_id}, {_stamp(at)})"
    )
    state.queue(text)
    return text


def run_span(tags: dict[str, str]) -> tuple[str, str]:
    """The partition range a run covered, from its tags (WHOLE when unpartitioned)."""
    if tags.get(PARTITION_TAG):
        return (tags[PARTITION_TAG], tags[PARTITION_TAG])
    if tags.get(RANGE_START_TAG) and tags.get(RANGE_END_TAG):
        return (tags[RANGE_START_TAG], tags[RANGE_END_TAG])
    return WHOLE


def observe_check(
    state: AlertState,
    evaluation: AssetCheckEvaluation,
    *,
    run_id: str,
    at: float,
    severity: str = "ERROR",
) -> str | None:
    """Open or close the check's incident from one evaluation; return the alert or recovery text, if any.

    A failure below `severity` (a WARN check when ERROR is asked for) opens nothing.
    """
    asset = evaluation.asset_key.to_user_string()
    key = f"check:{asset}:{evaluation.check_name}"
    span = (evaluation.partition, evaluation.partition) if evaluation.partition else WHOLE
    if evaluation.passed:
        return record_success(state, key, span, run_id=run_id, at=at)
    if severity == "ERROR" and evaluation.severity != AssetCheckSeverity.ERROR:
        return None
    description = (evaluation.description or "no description").strip().splitlines()[0][:300]
    detail = f"{evaluation.severity.value}: {description}"
    title = f"check {evaluation.check_name} on {asset}"
    return record_failure(state, key, title, span, run_id=run_id, at=at, detail=detail)


def observe_run(
    state: AlertState,
    *,
    job: str,
    tags: dict[str, str],
    succeeded: bool,
    run_id: str,
    at: float,
    message: str = "",
) -> str | None:
    """Open or close the job's incident from one finished run; return the alert or recovery text, if any."""
    key = f"run:{job}"
    span = run_span(tags)
    if succeeded:
        return record_success(state, key, span, run_id=run_id, at=at)
    detail = (message or "run failed").strip().splitlines()[0][:300]
    return record_failure(state, key, f"job {job}", span, run_id=run_id, at=at, detail=detail)


# ------------------------------------------------------------------ reading the instance


@dataclass(frozen=True)
class FinishedRun:
    """A RUN_SUCCESS or RUN_FAILURE event."""

    storage_id: int
    run_id: str
    succeeded: bool
    at: float
    message: str


def _finished(records: Iterable[EventLogRecord], succeeded: bool) -> list[FinishedRun]:
    runs = []
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        message = (event.message if event is not None else None) or entry.user_message or ""
        runs.append(FinishedRun(record.storage_id, entry.run_id, succeeded, entry.timestamp, message))
    return runs


def newest_storage_id(instance: DagsterInstance, event_type: DagsterEventType) -> int:
    """The storage id of the newest event of this type (0 when there is none)."""
    result = instance.fetch_run_status_changes(event_type, limit=1, ascending=False)
    return result.records[0].storage_id if result.records else 0


def finished_runs(instance: DagsterInstance, state: AlertState, limit: int) -> list[FinishedRun]:
    """Runs finished after the cursor, in event order, and advance the cursor past them.

    Both event types are read up to `limit`; when one of them was cut off, only events up to the last
    one read of that type are taken, so the merged order never skips an event of the other type.
    """
    assert state.after_failure is not None and state.after_success is not None
    read: list[FinishedRun] = []
    horizon: int | None = None
    for succeeded, event_type, after in (
        (False, DagsterEventType.RUN_FAILURE, state.after_failure),
        (True, DagsterEventType.RUN_SUCCESS, state.after_success),
    ):
        result = instance.fetch_run_status_changes(
            RunStatusChangeRecordsFilter(event_type=event_type, after_storage_id=after),
            limit=limit,
            ascending=True,
        )
        read += _finished(result.records, succeeded)
        if len(result.records) >= limit:
            last = result.records[-1].storage_id
            horizon = last if horizon is None else min(horizon, last)
    taken = sorted(
        (run for run in read if horizon is None or run.storage_id <= horizon), key=lambda run: run.storage_id
    )
    for run in taken:
        if run.succeeded:
            state.after_success = max(state.after_success, run.storage_id)
        else:
            state.after_failure = max(state.after_failure, run.storage_id)
    return taken


def check_evaluations(instance: DagsterInstance, run_id: str) -> list[AssetCheckEvaluation]:
    """The asset check evaluations a run recorded, in order."""
    # OSS Dagster has no @public reader for check evaluations; get_records_for_run is the instance's
    # own, non-deprecated event reader (docs/decisions.md, "Alerts").
    connection = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluations = []
    for record in connection.records:
        event = record.event_log_entry.dagster_event
        if event is not None:
            evaluations.append(event.asset_check_evaluation_data)
    return evaluations


def deliver(state: AlertState, webhook: AlertWebhook) -> tuple[int, str | None]:
    """Post queued messages in order until one is refused; return (delivered, the error if any)."""
    if state.dropped:
        state.outbox.insert(0, f":warning: {state.dropped} alerts were dropped while the webhook was down")
        state.dropped = 0
    delivered = 0
    while state.outbox:
        try:
            webhook.post(state.outbox[0])
        except AlertDeliveryError as exc:
            return delivered, str(exc)
        state.outbox.pop(0)
        delivered += 1
    return delivered, None


def evaluate(
    instance: DagsterInstance, state: AlertState, webhook: AlertWebhook, *, limit: int = EVENTS_PER_TICK
) -> tuple[str, list[str]]:
    """One tick: read finished runs and their checks, update incidents, deliver.

    Returns a summary and the alert and recovery texts this tick produced.
    """
    if not webhook.configured():
        state.after_failure = newest_storage_id(instance, DagsterEventType.RUN_FAILURE)
        state.after_success = newest_storage_id(instance, DagsterEventType.RUN_SUCCESS)
        state.incidents.clear()
        state.outbox.clear()
        return f"alerts off: ${webhook.url_env} is not set", []
    if not state.started:
        # A new sensor starts at the newest finished run: history is not alerted after the fact.
        state.after_failure = newest_storage_id(instance, DagsterEventType.RUN_FAILURE)
        state.after_success = newest_storage_id(instance, DagsterEventType.RUN_SUCCESS)
        return "started: watching runs that finish from now on", []
    texts: list[str | None] = []
    runs = finished_runs(instance, state, limit)
    for run in runs:
        dagster_run = instance.get_run_by_id(run.run_id)
        if dagster_run is None:
            continue  # deleted since
        for evaluation in check_evaluations(instance, run.run_id):
            texts.append(
                observe_check(
                    state, evaluation, run_id=run.run_id, at=run.at, severity=webhook.check_severity
                )
            )
        texts.append(
            observe_run(
                state,
                job=dagster_run.job_name,
                tags=dict(dagster_run.tags),
                succeeded=run.succeeded,
                run_id=run.run_id,
                at=run.at,
                message=run.message,
            )
        )
    queued = len(state.outbox)
    delivered, error = deliver(state, webhook)
    summary = (
        f"{len(runs)} finished runs read, {len(state.incidents)} incidents open, {delivered} alerts sent"
    )
    if error:
        summary += f"; {queued - delivered} queued: {error}"
    return summary, [text for text in texts if text]


def build_alert_sensor(*, minimum_interval_seconds: int = 30) -> SensorDefinition:
    """The `alerts` sensor (see the module docstring)."""

    @sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Posts run failures and failed checks to the alert webhook, once per incident.",
    )
    def alerts(context: SensorEvaluationContext, alert_webhook: AlertWebhook) -> SensorResult:
        """Turn finished runs into incident alerts and recoveries."""
        state = AlertState.parse(context.cursor)
        summary, texts = evaluate(context.instance, state, alert_webhook)
        for text in texts:
            context.log.warning(text)
        return SensorResult(skip_reason=summary, cursor=state.dump())

    return alerts
