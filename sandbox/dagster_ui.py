"""The demo's client of the Dagster webserver's GraphQL API: the same calls the UI's buttons make."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

# The implicit job every asset selection of a code location runs in.
ASSET_JOB = "__ASSET_JOB"
REPOSITORY = "__repository__"
IN_PROGRESS = ("QUEUED", "NOT_STARTED", "MANAGED", "STARTING", "STARTED", "CANCELING")
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
# Dagster's documented run tags for one run over a range of partitions.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

_WORKSPACE = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
    ... on PythonError { message }
  }
}"""
_LAUNCH = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}"""
_RUN = """
query($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status }
    ... on Error { message }
  }
}"""
_RUNS = """
query($statuses: [RunStatus!]) {
  runsOrError(filter: {statuses: $statuses}) {
    __typename
    ... on Runs { results { runId status } }
    ... on Error { message }
  }
}"""
_TERMINATE = """
mutation($runIds: [String!]!, $policy: TerminateRunPolicy) {
  terminateRuns(runIds: $runIds, terminatePolicy: $policy) {
    __typename
    ... on TerminateRunsResult { terminateRunResults { __typename ... on Error { message } } }
    ... on Error { message }
  }
}"""
_REPORT = """
mutation($params: ReportRunlessAssetEventsParams!) {
  reportRunlessAssetEvents(eventParams: $params) {
    __typename
    ... on Error { message }
  }
}"""


_SCHEDULE = """
query($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) {
    __typename
    ... on Schedule { scheduleState { id status } }
    ... on Error { message }
  }
}"""
_STOP_SCHEDULE = """
mutation($id: String!) {
  stopRunningSchedule(id: $id) { __typename ... on Error { message } }
}"""
_RESET_SCHEDULE = """
mutation($selector: ScheduleSelector!) {
  resetSchedule(scheduleSelector: $selector) { __typename ... on Error { message } }
}"""


_SLOT_HOLDERS = """
query {
  instance { concurrencyLimits { concurrencyKey activeRunIds pendingStepRunIds } }
}"""
_FREE_SLOTS = """
mutation($runId: String!) { freeConcurrencySlotsForRun(runId: $runId) }
"""


class UiError(RuntimeError):
    """The webserver refused a request or answered with an error."""


class DagsterUi:
    """A Dagster webserver at `url`, driven through its GraphQL API."""

    def __init__(self, url: str, timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._transport = transport

    def _client(self, timeout: float) -> httpx.Client:
        return httpx.Client(timeout=timeout, transport=self._transport)

    def answers(self) -> bool:
        """True once the webserver serves requests."""
        try:
            with self._client(2) as client:
                return client.get(f"{self.url}/server_info").status_code == 200
        except httpx.HTTPError:
            return False

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """One GraphQL request; transport and GraphQL-level errors raise UiError."""
        try:
            with self._client(self.timeout) as client:
                response = client.post(
                    f"{self.url}/graphql", json={"query": query, "variables": variables or {}}
                )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise UiError(f"{self.url}/graphql: {exc}") from exc
        body = response.json()
        if body.get("errors"):
            raise UiError(f"{self.url}/graphql: {body['errors'][0].get('message')}")
        return body["data"]

    def locations(self) -> dict[str, str | None]:
        """Each code location's load error, or None when it loaded (absent while still loading)."""
        result = self.graphql(_WORKSPACE)["workspaceOrError"]
        if result["__typename"] != "Workspace":
            raise UiError(f"workspace: {result.get('message')}")
        loaded: dict[str, str | None] = {}
        for entry in result["locationEntries"]:
            if entry["loadStatus"] != "LOADED":
                continue
            location = entry["locationOrLoadError"] or {}
            failed = location.get("__typename") == "PythonError"
            loaded[entry["name"]] = location.get("message") if failed else None
        return loaded

    def launch(
        self,
        location: str,
        *,
        job: str = ASSET_JOB,
        assets: Sequence[Sequence[str]] = (),
        tags: dict[str, str] | None = None,
    ) -> str:
        """Launch a run of a job (by default the asset selection `assets`); returns its run id."""
        selector: dict[str, Any] = {
            "repositoryLocationName": location,
            "repositoryName": REPOSITORY,
            "jobName": job,
        }
        if assets:
            selector["assetSelection"] = [{"path": list(path)} for path in assets]
        params = {
            "selector": selector,
            "mode": "default",
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
        }
        result = self.graphql(_LAUNCH, {"params": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            detail = result.get("message") or "; ".join(e["message"] for e in result.get("errors", []))
            raise UiError(f"launching {job} in {location}: {result['__typename']}: {detail}")
        return result["run"]["runId"]

    def run_status(self, run_id: str) -> str:
        """A run's status (QUEUED, STARTED, SUCCESS, FAILURE, CANCELED, ...)."""
        result = self.graphql(_RUN, {"runId": run_id})["runOrError"]
        if result["__typename"] != "Run":
            raise UiError(f"run {run_id}: {result.get('message')}")
        return result["status"]

    def wait_run(self, run_id: str, seconds: float, stop: Callable[[], bool] = lambda: False) -> str:
        """Poll a run until it finishes, `stop()` turns true or `seconds` pass; its last status."""
        deadline = time.monotonic() + seconds
        status = self.run_status(run_id)
        while status not in FINISHED and time.monotonic() < deadline and not stop():
            time.sleep(0.5)
            status = self.run_status(run_id)
        return status

    def runs(self, statuses: Sequence[str]) -> dict[str, str]:
        """Run id -> status of every run in one of `statuses`."""
        result = self.graphql(_RUNS, {"statuses": list(statuses)})["runsOrError"]
        if result["__typename"] != "Runs":
            raise UiError(f"runs: {result.get('message')}")
        return {run["runId"]: run["status"] for run in result["results"]}

    def runs_in_progress(self) -> list[str]:
        """Ids of every run queued, starting, running or being cancelled."""
        return list(self.runs(IN_PROGRESS))

    def terminate(self, run_ids: Sequence[str], *, force: bool = False) -> None:
        """Cancel runs as the UI's Terminate button does (`force`: mark them cancelled at once)."""
        policy = "MARK_AS_CANCELED_IMMEDIATELY" if force else "SAFE_TERMINATE"
        self.graphql(_TERMINATE, {"runIds": list(run_ids), "policy": policy})

    def runs_holding_pool_slots(self) -> set[str]:
        """Ids of the runs that hold or wait for a concurrency pool slot."""
        pools = self.graphql(_SLOT_HOLDERS)["instance"]["concurrencyLimits"]
        return {run_id for pool in pools for run_id in (*pool["activeRunIds"], *pool["pendingStepRunIds"])}

    def free_pool_slots(self, run_id: str) -> None:
        """Free every pool slot a run holds (the UI's "Free concurrency slots" on a run)."""
        if not self.graphql(_FREE_SLOTS, {"runId": run_id})["freeConcurrencySlotsForRun"]:
            raise UiError(f"freeing the pool slots of run {run_id} failed")

    def free_slots_of_finished_runs(self) -> list[str]:
        """Free the slots still held by runs that ended (a run cancelled mid-step keeps its slot)."""
        holders = self.runs_holding_pool_slots()
        if not holders:
            return []
        in_progress = set(self.runs(IN_PROGRESS))
        freed = sorted(holders - in_progress)
        for run_id in freed:
            self.free_pool_slots(run_id)
        return freed

    def stop_schedule(self, location: str, name: str) -> bool:
        """Stop a running schedule (the UI's toggle); True if it was running."""
        selector = {"repositoryLocationName": location, "repositoryName": REPOSITORY, "scheduleName": name}
        result = self.graphql(_SCHEDULE, {"selector": selector})["scheduleOrError"]
        if result["__typename"] != "Schedule":
            raise UiError(f"schedule {name} in {location}: {result.get('message')}")
        state = result["scheduleState"]
        if state["status"] != "RUNNING":
            return False
        stopped = self.graphql(_STOP_SCHEDULE, {"id": state["id"]})["stopRunningSchedule"]
        if stopped["__typename"] != "ScheduleStateResult":
            raise UiError(f"stopping schedule {name}: {stopped.get('message')}")
        return True

    def reset_schedule(self, location: str, name: str) -> None:
        """Give a schedule back the status its code defines (the UI's "reset")."""
        selector = {"repositoryLocationName": location, "repositoryName": REPOSITORY, "scheduleName": name}
        result = self.graphql(_RESET_SCHEDULE, {"selector": selector})["resetSchedule"]
        if result["__typename"] != "ScheduleStateResult":
            raise UiError(f"resetting schedule {name}: {result.get('message')}")

    def report_materialization(
        self, asset_key: Sequence[str], partitions: Sequence[str], description: str
    ) -> None:
        """Record that data of `asset_key` was written outside a run (the UI's "Report materialization")."""
        params = {
            "eventType": "ASSET_MATERIALIZATION",
            "assetKey": {"path": list(asset_key)},
            "partitionKeys": list(partitions),
            "description": description,
        }
        result = self.graphql(_REPORT, {"params": params})["reportRunlessAssetEvents"]
        if result["__typename"] != "ReportRunlessAssetEventsSuccess":
            raise UiError(f"reporting {'/'.join(asset_key)}: {result.get('message')}")
