"""The soak's live stack: its own PostgreSQL database, the sandbox, dagster-webserver and dagster-daemon.

Every process is started in its own session on 127.0.0.1 with a free port. `ProcessWatch` records each
descendant it ever sees (pid and kernel start time, so a reused pid is never mistaken for ours), which
is how the soak proves that nothing it started is left running after it stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy

from bench import _procfs as procfs
from sandbox.alerts import DEFAULT_TOKEN
from sandbox.demo import DEMO_ENV
from sandbox.server import free_port

ROOT = Path(__file__).resolve().parent.parent
PG_URL_DEFAULT = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
# Variables of the caller that would override what the soak configures.
_SCRUBBED = ("SERVICE_CONFIG", "DAGSTER_JSON_LOG", "SUPPLIER_REGISTRY", "STOREFRONT_ADAPTER")


class StackError(RuntimeError):
    """A part of the stack did not start or answer in time; the message names it."""


# ------------------------------------------------------------------ processes


def descendants(roots: list[int]) -> set[int]:
    """The roots and every process below them, now."""
    table = procfs.table()
    return set(procfs.tree([pid for pid in roots if pid in table], table))


@dataclass
class ProcessWatch:
    """Every process descended from the roots, as seen by `sample()` calls: (pid, start time) -> command."""

    roots: list[int] = field(default_factory=list)
    seen: dict[tuple[int, int], str] = field(default_factory=dict)

    def sample(self) -> int:
        """Record the roots' current descendants; returns how many are alive now."""
        table = procfs.table()
        below = procfs.tree([pid for pid in self.roots if pid in table], table)
        for pid in below:
            key = (pid, table[pid].start)
            if key not in self.seen:
                command = procfs.cmdline(pid)
                self.seen[key] = "?" if command is None else command.strip()
        return len(below)

    def alive(self) -> list[tuple[int, str]]:
        """Processes ever seen that still run (same pid and start time)."""
        left = []
        for (pid, started), command in self.seen.items():
            found = procfs.stat(pid)
            if found is not None and found.start == started:
                left.append((pid, command))
        return left


def stop_process(process: subprocess.Popen[bytes], *, grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds (only this process, never a name pattern)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def kill_left(pids: list[tuple[int, str]], *, grace: float = 10.0) -> None:
    """Terminate leftover processes by pid (SIGTERM, then SIGKILL)."""
    for pid, _ in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(procfs.stat(pid) for pid, _ in pids):
        time.sleep(0.2)
    for pid, _ in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ PostgreSQL


class PostgresDatabase:
    """A uniquely named database on the machine's PostgreSQL, created for one soak and dropped after."""

    def __init__(self, admin_url: str | None = None) -> None:
        self.admin_url = admin_url or os.environ.get("BENCH_SOAK_PG_URL") or PG_URL_DEFAULT
        self.name = f"soak_{uuid.uuid4().hex[:12]}"
        self._admin = sqlalchemy.create_engine(
            self.admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
        )

    def reachable(self) -> str | None:
        """None when the server answers, else why not."""
        try:
            with self._admin.connect() as conn:
                conn.execute(sqlalchemy.text("select 1"))
        except Exception as exc:  # any driver error means "not reachable" here
            return f"PostgreSQL not reachable at {self._safe_url()} ({type(exc).__name__})"
        return None

    def _safe_url(self) -> str:
        return sqlalchemy.engine.make_url(self.admin_url).render_as_string(hide_password=True)

    def create(self) -> str:
        """Create the database; returns its URL for DAGSTER_PG_URL."""
        with self._admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{self.name}"'))
        url = sqlalchemy.engine.make_url(self.admin_url).set(database=self.name, drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def drop(self) -> None:
        """Drop the database (and whatever connections are still open to it)."""
        with self._admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self._admin.dispose()


# ------------------------------------------------------------------ the webserver's GraphQL API


class GraphQL:
    """The webserver's GraphQL endpoint (what the UI and an operator's scripts call)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = httpx.Client(timeout=60)

    def __call__(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request; GraphQL errors raise StackError with their messages."""
        response = self._client.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise StackError(f"GraphQL error: {[error.get('message') for error in body['errors']]}")
        return body["data"]

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()


# ------------------------------------------------------------------ the stack


@dataclass
class Stack:
    """Sandbox + webserver + daemon on a fresh DAGSTER_HOME (deploy/postgres) and a fresh database."""

    folder: Path
    skus: int
    seed: int
    service_config: dict[str, Any]
    database: PostgresDatabase = field(default_factory=PostgresDatabase)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    watch: ProcessWatch = field(default_factory=ProcessWatch)
    sandbox_url: str = ""
    ui_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    env_extra: dict[str, str] = field(default_factory=dict)

    @property
    def alert_url(self) -> str:
        """The webhook URL the alerts sensor posts to (a secret: it must never show up in a log)."""
        return f"{self.sandbox_url}/alerts/{self.env_extra.get('SANDBOX_ALERT_TOKEN', DEFAULT_TOKEN)}"

    def log(self, name: str, stream: str) -> Path:
        """Where a process's stdout or stderr goes."""
        return self.folder / f"{name}.{stream}.log"

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with self.log(name, "out").open("wb") as out, self.log(name, "err").open("wb") as err:
            process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=err, start_new_session=True
            )
        self.processes[name] = process
        self.watch.roots.append(process.pid)
        return process

    def _wait(self, name: str, url: str, seconds: float) -> None:
        process = self.processes[name]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = self.log(name, "err").read_text(errors="replace")[-2000:]
                raise StackError(f"{name} exited with {process.returncode}: {tail}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise StackError(f"{name} did not answer {url} within {seconds:.0f} s")

    def start(self) -> None:
        """Database, DAGSTER_HOME, sandbox, then the webserver and the daemon (both code locations)."""
        home = self.folder / "dagster_home"
        home.mkdir(parents=True)
        shutil.copyfile(ROOT / "deploy" / "postgres" / "dagster.yaml", home / "dagster.yaml")
        config_file = self.folder / "service_config.json"
        config_file.write_text(json.dumps(self.service_config, indent=2))
        sandbox_port, ui_port = free_port(), free_port()
        self.sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        self.ui_url = f"http://127.0.0.1:{ui_port}"
        base = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        self.env = {
            **base,
            **DEMO_ENV,
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_URL": self.database.create(),
            "SANDBOX_URL": self.sandbox_url,
            "STOREFRONT_URL": f"{self.sandbox_url}/storefront",
            "WAREHOUSE_DIR": str(self.folder / "warehouse"),
            "ORDERS_DB_URL": f"sqlite:///{self.folder / 'orders.db'}",
            "SERVICE_CONFIG_FILE": str(config_file),
            **self.env_extra,
        }
        self.env["ALERT_WEBHOOK_URL"] = self.alert_url
        python = sys.executable
        self._spawn(
            "sandbox",
            [python, "-m", "sandbox", "--port", str(sandbox_port), "--seed", str(self.seed), "--skus",
             str(self.skus), "--orders-db", str(self.folder / "orders.db")],
        )  # fmt: skip
        self._wait("sandbox", f"{self.sandbox_url}/_health", 120)
        binaries = Path(python).parent
        workspace = str(ROOT / "workspace.yaml")
        self._spawn(
            "webserver",
            [str(binaries / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(ui_port),
             "--log-format", "json"],
        )  # fmt: skip
        self._spawn(
            "daemon", [str(binaries / "dagster-daemon"), "run", "-w", workspace, "--log-format", "json"]
        )
        self._wait("webserver", f"{self.ui_url}/server_info", 180)
        self.watch.sample()

    def stop_daemon(self, *, drain_seconds: float = 120.0) -> None:
        """Stop the daemon (nothing new is launched), then let running run processes finish (bounded)."""
        self.watch.sample()
        if "daemon" in self.processes:
            stop_process(self.processes["daemon"])
        # Run workers outlive the daemon that launched them: they finish their run and exit.
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline:
            self.watch.sample()
            serving = descendants(
                [self.processes[n].pid for n in ("webserver", "sandbox") if n in self.processes]
            )
            if not [pid for pid, _ in self.watch.alive() if pid not in serving]:
                return
            time.sleep(1)

    def stop_rest(self, *, grace: float = 90.0) -> list[tuple[int, str]]:
        """Stop the webserver and the sandbox; returns what is still running after `grace` seconds.

        A leftover is a process the stack started (directly or through its children) that is still
        alive after everything was stopped and given time to exit; it is then killed by pid, and the
        soak reports it.
        """
        self.watch.sample()
        for name in ("daemon", "webserver", "sandbox"):
            if name in self.processes:
                stop_process(self.processes[name])
        # Code servers stop on their own when their parent goes (within their 60 s RPC grace).
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.watch.alive():
            time.sleep(0.5)
        left = self.watch.alive()
        if left:
            kill_left(left)
        return left

    def drop_database(self) -> None:
        """Drop the soak's database (after every process is gone)."""
        self.database.drop()


# ------------------------------------------------------------------ what an operator does through the API

LOCATIONS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus locationOrLoadError {
  __typename ... on PythonError { message }
  ... on RepositoryLocation { repositories { name
    sensors { name jobOriginId sensorState { id selectorId status } }
    schedules { name cronSchedule scheduleState { id selectorId status } } } } } } } } }
"""
START_SENSOR = """
mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {
  __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }
"""
STOP_SENSOR = """
mutation($origin: String!, $selector: String!) {
  stopSensor(jobOriginId: $origin, jobSelectorId: $selector) {
    __typename ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message } } }
"""
START_SCHEDULE = """
mutation($selector: ScheduleSelector!) { startSchedule(scheduleSelector: $selector) {
  __typename ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }
"""
STOP_SCHEDULE = """
mutation($id: String!, $selector: String!) { stopRunningSchedule(id: $id, scheduleSelectorId: $selector) {
  __typename ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }
"""
LAUNCH = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } ... on InvalidSubsetError { message } } }
"""
RUNS = """
query($filter: RunsFilter, $cursor: String, $limit: Int) {
  runsOrError(filter: $filter, cursor: $cursor, limit: $limit) {
    __typename ... on PythonError { message }
    ... on Runs { results { runId jobName status creationTime startTime endTime tags { key value } } } } }
"""
TICKS = """
query($selector: ScheduleSelector!, $cursor: Float, $until: Float) {
  scheduleOrError(scheduleSelector: $selector) {
    __typename ... on Schedule { futureTicks(cursor: $cursor, until: $until) { results { timestamp } } } } }
"""
REPOSITORY = "__repository__"


class Operator:
    """What an operator does through the webserver's GraphQL API: the UI's buttons, scripted."""

    def __init__(self, graphql: GraphQL) -> None:
        self.graphql = graphql

    def locations(self) -> list[dict[str, Any]]:
        """The workspace's location entries with their sensors and schedules."""
        data = self.graphql(LOCATIONS)["workspaceOrError"]
        if data["__typename"] != "Workspace":
            raise StackError(f"workspace not available: {data}")
        return data["locationEntries"]

    def wait_loaded(self, names: set[str], seconds: float = 180) -> None:
        """Until every named code location is loaded (a load error fails at once)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            entries = {entry["name"]: entry for entry in self.locations()}
            for entry in entries.values():
                if (
                    entry["locationOrLoadError"]
                    and entry["locationOrLoadError"]["__typename"] == "PythonError"
                ):
                    raise StackError(
                        f"location {entry['name']} failed to load: {entry['locationOrLoadError']}"
                    )
            if names <= {name for name, entry in entries.items() if entry["loadStatus"] == "LOADED"}:
                return
            time.sleep(1)
        raise StackError(f"code locations {sorted(names)} not loaded within {seconds:.0f} s")

    def instigators(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(kind "sensor" | "schedule", location, definition) of everything that starts runs."""
        found = []
        for entry in self.locations():
            for repository in (entry["locationOrLoadError"] or {}).get("repositories", []):
                found += [("sensor", entry["name"], sensor) for sensor in repository["sensors"]]
                found += [("schedule", entry["name"], schedule) for schedule in repository["schedules"]]
        return found

    def set_all(self, running: bool) -> list[str]:
        """Start (or stop) every sensor and schedule of every location; returns the names changed."""
        changed = []
        for kind, location, item in self.instigators():
            state = item["sensorState" if kind == "sensor" else "scheduleState"]
            if (state["status"] == "RUNNING") == running:
                continue
            if kind == "sensor" and running:
                selector = {
                    "repositoryLocationName": location,
                    "repositoryName": REPOSITORY,
                    "sensorName": item["name"],
                }
                result = self.graphql(START_SENSOR, {"selector": selector})["startSensor"]
            elif kind == "sensor":
                variables = {"origin": item["jobOriginId"], "selector": state["selectorId"]}
                result = self.graphql(STOP_SENSOR, variables)["stopSensor"]
            elif running:
                selector = {
                    "repositoryLocationName": location,
                    "repositoryName": REPOSITORY,
                    "scheduleName": item["name"],
                }
                result = self.graphql(START_SCHEDULE, {"selector": selector})["startSchedule"]
            else:
                variables = {"id": state["id"], "selector": state["selectorId"]}
                result = self.graphql(STOP_SCHEDULE, variables)["stopRunningSchedule"]
            if result["__typename"] == "PythonError":
                raise StackError(f"could not switch {kind} {item['name']}: {result['message']}")
            changed.append(f"{location}.{item['name']}")
        return changed

    def launch(self, location: str, job: str, assets: list[list[str]] | None = None) -> str:
        """Launch a job (or the location's asset job for some assets), as the UI's Materialize does."""
        selector: dict[str, Any] = {
            "repositoryLocationName": location,
            "repositoryName": REPOSITORY,
            "pipelineName": job,
        }
        if assets:
            selector["assetSelection"] = [{"path": path} for path in assets]
        result = self.graphql(LAUNCH, {"params": {"selector": selector, "runConfigData": {}}})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise StackError(f"could not launch {job}: {result}")
        return result["run"]["runId"]

    def runs(self, created_after: float) -> list[dict[str, Any]]:
        """Every run created after a time, newest first (paged)."""
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            variables = {"filter": {"createdAfter": created_after}, "cursor": cursor, "limit": 200}
            result = self.graphql(RUNS, variables)["runsOrError"]
            if result["__typename"] != "Runs":
                raise StackError(f"runs not available: {result}")
            page = result["results"]
            found += page
            if len(page) < 200:
                return found
            cursor = page[-1]["runId"]

    def wait_run(self, run_id: str, seconds: float) -> str:
        """Poll one run until it finishes; returns its status."""
        deadline = time.monotonic() + seconds
        status = "?"
        while time.monotonic() < deadline:
            found = self.graphql(RUNS, {"filter": {"runIds": [run_id]}, "limit": 1})["runsOrError"]
            status = found["results"][0]["status"] if found.get("results") else "?"
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(1)
        raise StackError(f"run {run_id} still {status} after {seconds:.0f} s")

    def schedule_ticks(self, location: str, name: str, start: float, until: float) -> list[float]:
        """When a schedule is due between two times (Dagster's own cron evaluation)."""
        selector = {"repositoryLocationName": location, "repositoryName": REPOSITORY, "scheduleName": name}
        result = self.graphql(TICKS, {"selector": selector, "cursor": start, "until": until})[
            "scheduleOrError"
        ]
        if result["__typename"] != "Schedule":
            raise StackError(f"schedule {name} not available: {result}")
        return [float(tick["timestamp"]) for tick in result["futureTicks"]["results"]]
