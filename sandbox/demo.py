"""`make demo`: the sandbox (suppliers, CDN, storefront, orders DB) plus the Dagster UI, on 127.0.0.1.

The demo starts every process itself, each in its own process group: the sandbox, one code server
per code location of workspace.yaml (`dagster code-server start`), `dagster-webserver` and
`dagster-daemon`, both pointed at those code servers. Runs are children of the code servers.
Ctrl-C, SIGTERM and SIGHUP stop them in an order that leaves nothing behind: the daemon first (no
new runs), then every run still queued or running is cancelled through the webserver as the UI's
Terminate button does, then the webserver, the code servers and the sandbox; whatever is still
alive after its grace period is killed with its whole process group. Why not `dagster dev`:
docs/decisions.md ("The demo runs its own processes").

Settings (environment): SANDBOX_PORT (8700), DAGSTER_PORT (3000), DAGSTER_HOME (.dagster_home),
DAGSTER_INSTANCE (folder of the dagster.yaml to use, default the repository's), SANDBOX_DATA_DIR
(sandbox_data), WAREHOUSE_DIR (warehouse), DEMO_SKUS (2000), DEMO_LIVE_ORDERS_PER_MINUTE (2),
DEMO_LOG_LEVEL (warning: the level of the Dagster processes' own logs).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx
import yaml

from sandbox.dagster_ui import DagsterUi, UiError
from sandbox.server import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Demo-only credentials the sandbox accepts; a real deployment sets its own in the environment.
DEMO_ENV = {
    "ALPHA_API_KEY": "sandbox-alpha-key",
    "BETA_CLIENT_ID": "sandbox-beta",
    "BETA_CLIENT_SECRET": "sandbox-beta-secret",
    "GAMMA_USERNAME": "sandbox-gamma",
    "GAMMA_PASSWORD": "sandbox-gamma-pass",
    "DELTA_CDN_PASSPHRASE": "sandbox-delta-passphrase",
    "STOREFRONT_WEBHOOK_SECRET": "sandbox-storefront-secret",
}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
START_SECONDS = 180  # each start-up wait (sandbox, code servers, webserver)
GRACE_SECONDS = 15  # a process's own shutdown before its group is killed
CANCEL_SECONDS = 30  # in-flight runs reaching CANCELED before they are marked so


@dataclass(frozen=True)
class Settings:
    """Where the demo puts things and which ports it serves on."""

    sandbox_port: int
    ui_port: int
    home: Path
    instance_dir: Path
    data_dir: Path
    warehouse_dir: Path
    skus: int
    live_orders_per_minute: int
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Settings from the environment, with the documented defaults."""
        return cls(
            sandbox_port=int(environ.get("SANDBOX_PORT") or 8700),
            ui_port=int(environ.get("DAGSTER_PORT") or 3000),
            home=Path(environ.get("DAGSTER_HOME") or ROOT / ".dagster_home").resolve(),
            instance_dir=(ROOT / (environ.get("DAGSTER_INSTANCE") or ".")).resolve(),
            data_dir=Path(environ.get("SANDBOX_DATA_DIR") or ROOT / "sandbox_data").resolve(),
            warehouse_dir=Path(environ.get("WAREHOUSE_DIR") or ROOT / "warehouse").resolve(),
            skus=int(environ.get("DEMO_SKUS") or 2000),
            live_orders_per_minute=int(environ.get("DEMO_LIVE_ORDERS_PER_MINUTE") or 2),
            log_level=(environ.get("DEMO_LOG_LEVEL") or "warning").lower(),
        )

    @property
    def sandbox_url(self) -> str:
        """Base URL of the sandbox."""
        return f"http://127.0.0.1:{self.sandbox_port}"

    @property
    def ui_url(self) -> str:
        """Base URL of the Dagster UI."""
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def service_config_file(self) -> Path:
        """The SERVICE_CONFIG file the demo's runs re-read (flip switches by editing it)."""
        return self.data_dir / "service_config.json"


YAML_LOGGING_BETA_WARNING = "ignore:Handling yaml-defined logging configuration"


def demo_environment(settings: Settings, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment the sandbox and Dagster run with in the demo (existing values win)."""
    sandbox_url = settings.sandbox_url
    defaults = {
        **DEMO_ENV,
        "SANDBOX_URL": sandbox_url,
        "STOREFRONT_URL": f"{sandbox_url}/storefront",
        # Used when STOREFRONT_ADAPTER=shopify: the sandbox's Shopify-compatible GraphQL endpoint.
        "SHOPIFY_SHOP_URL": f"{sandbox_url}/shopify",
        "SHOPIFY_ACCESS_TOKEN": "sandbox-shopify-token",
        "WAREHOUSE_DIR": str(settings.warehouse_dir),
        "ORDERS_DB_URL": f"sqlite:///{settings.data_dir / 'orders.db'}",
        "SERVICE_CONFIG_FILE": str(settings.service_config_file),
    }
    # Every run process prints a BetaWarning for the instance's YAML log handlers (the JSON lines in
    # $DAGSTER_HOME/logs/runs.jsonl, docs/pricing_operations.md): nothing a demo user can act on.
    # Matched by message, so no interpreter has to import dagster to resolve a warning category.
    quiet = ",".join(filter(None, [environ.get("PYTHONWARNINGS"), YAML_LOGGING_BETA_WARNING]))
    return {
        **environ,
        **{k: v for k, v in defaults.items() if not environ.get(k)},
        "DAGSTER_HOME": str(settings.home),
        "PYTHONWARNINGS": quiet,
    }


def prepare_home(home: Path, instance_dir: Path) -> None:
    """Create DAGSTER_HOME with the chosen instance config (local SQLite by default)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(instance_dir / "dagster.yaml", home / "dagster.yaml")


def init_instance(home: Path) -> None:
    """Create the instance's storage now, before the code servers, webserver and daemon race to."""
    os.environ["DAGSTER_HOME"] = str(home)
    # Imported here: `python -m sandbox.demo` starts the sandbox before paying for this import.
    from dagster import DagsterInstance

    with DagsterInstance.get():
        pass


def prepare_service_config(path: Path) -> bool:
    """Create the demo's SERVICE_CONFIG file with the defaults unless it exists; True if created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dry_run": False}, indent=2) + "\n")
    return True


@dataclass(frozen=True)
class CodeLocation:
    """One code location of workspace.yaml, served by its own code server."""

    name: str
    module: str
    attribute: str | None
    port: int


def code_locations(workspace: Path, ports: Callable[[], int]) -> list[CodeLocation]:
    """The python_module entries of a workspace file, each given a port."""
    entries = yaml.safe_load(workspace.read_text())["load_from"]
    locations = []
    for entry in entries:
        module = entry.get("python_module")
        if not isinstance(module, dict):
            raise SystemExit(f"{workspace}: the demo serves python_module entries only, got {entry}")
        name = module.get("location_name") or module["module_name"]
        locations.append(CodeLocation(name, module["module_name"], module.get("attribute"), ports()))
    return locations


def port_open(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class StopRequested(Exception):
    """A stop signal arrived while the demo was starting or waiting."""


class StopSignal:
    """Turns SIGINT, SIGTERM and SIGHUP into a flag the demo polls (a second signal means hurry).

    The handler only counts: a signal handler that took a lock (threading.Event.set does) deadlocks
    when the signal lands while the main thread holds that same lock, waiting on it.
    """

    POLL_SECONDS = 0.2
    # A signal sent to the process group also reaches `make`, which passes it on: the same stop
    # arrives twice within milliseconds. Only a signal this much later is a second one.
    REPEAT_SECONDS = 1.0

    def __init__(self) -> None:
        self.count = 0
        self.last = 0
        self.first_at = 0.0

    def install(self) -> None:
        """Handle the stop signals; also un-ignores SIGINT (a background shell ignores it for us)."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.count and now - self.first_at < self.REPEAT_SECONDS:
            return
        if not self.count:
            self.first_at = now
        self.count += 1
        self.last = signum

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self.count > 0

    @property
    def hurry(self) -> bool:
        """True once a second stop signal arrived: skip the graceful waits."""
        return self.count > 1

    def check(self) -> None:
        """Raise StopRequested if a stop signal arrived."""
        if self.requested:
            raise StopRequested

    def sleep(self, seconds: float) -> None:
        """Sleep, waking up (and raising StopRequested) within POLL_SECONDS of a stop signal."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, self.POLL_SECONDS))


@dataclass
class Child:
    """A process the demo started, leader of its own process group."""

    name: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        """The leader's process id (also the group id)."""
        return self.process.pid

    def alive(self) -> bool:
        """True while the leader runs (reaps it once it exits)."""
        return self.process.poll() is None

    def group_alive(self) -> bool:
        """True while any process of the group exists."""
        self.alive()
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def signal(self, signum: int) -> None:
        """Send a signal to the leader only (it shuts its own children down)."""
        if self.alive():
            self.process.send_signal(signum)

    def kill_group(self) -> None:
        """SIGKILL every process left in the group, then reap the leader."""
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


def log(message: str) -> None:
    """One line of the demo's own output."""
    print(f"demo: {message}", flush=True)


class Demo:
    """The running stack: started in order, stopped in the reverse order that loses nothing."""

    def __init__(self, settings: Settings, stop: StopSignal) -> None:
        self.settings = settings
        self.stop = stop
        self.env = demo_environment(settings)
        self.children: list[Child] = []
        self.ui = DagsterUi(settings.ui_url)
        self.started_at = time.monotonic()
        self.workspace = settings.home / "demo_workspace.yaml"

    def spawn(self, name: str, command: list[str]) -> Child:
        """Start a process in its own process group (so a terminal's Ctrl-C reaches the demo only)."""
        process = subprocess.Popen(command, cwd=ROOT, env=self.env, process_group=0)
        child = Child(name, process)
        self.children.append(child)
        return child

    def wait_until(self, what: str, ready: Callable[[], bool], watched: list[Child]) -> None:
        """Poll `ready` until true; fail if a watched process dies or START_SECONDS pass."""
        deadline = time.monotonic() + START_SECONDS
        while not ready():
            for child in watched:
                if not child.alive():
                    raise SystemExit(f"demo: {child.name} exited with {child.process.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: {what} not ready within {START_SECONDS} s")
            self.stop.sleep(0.25)

    def elapsed(self) -> str:
        """Seconds since the demo started, for its status lines."""
        return f"{time.monotonic() - self.started_at:.0f} s"

    def start(self) -> None:
        """Start the sandbox, the code servers and the webserver; return once the UI has both locations."""
        settings = self.settings
        prepare_home(settings.home, settings.instance_dir)
        if prepare_service_config(settings.service_config_file):
            log(f"created {settings.service_config_file} (SERVICE_CONFIG_FILE)")
        if os.environ.get("SERVICE_CONFIG"):
            log("SERVICE_CONFIG is set and wins over SERVICE_CONFIG_FILE: changing it needs a restart")
        sandbox = self.spawn(
            "sandbox",
            [
                sys.executable,
                "-m",
                "sandbox",
                "--port",
                str(settings.sandbox_port),
                "--skus",
                str(settings.skus),
                "--orders-db",
                str(settings.data_dir / "orders.db"),
                "--live-orders-per-minute",
                str(settings.live_orders_per_minute),
                # A real storefront remembers what it was sent; so does the demo's across restarts.
                "--state-file",
                str(settings.data_dir / "storefront.json"),
            ],
        )
        # Two processes creating a fresh SQLite instance at once fail ("table already exists").
        init_instance(settings.home)
        # The code servers load while the sandbox starts: they need it only when a run calls it.
        locations = code_locations(ROOT / "workspace.yaml", free_port)
        servers = [
            self.spawn(
                f"code server {location.name}",
                [
                    str(BIN / "dagster"),
                    "code-server",
                    "start",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(location.port),
                    "-m",
                    location.module,
                    *(["-a", location.attribute] if location.attribute else []),
                    "--location-name",
                    location.name,
                    "--working-directory",
                    str(ROOT),
                    "--log-level",
                    settings.log_level,
                ],
            )
            for location in locations
        ]
        self.wait_until("sandbox", lambda: _answers(f"{settings.sandbox_url}/_health"), [sandbox])
        log(f"sandbox on {settings.sandbox_url} (storefront page: {settings.sandbox_url}/storefront/)")
        # A code server opens its port only once its code is loaded (or failed to load).
        self.wait_until("code servers", lambda: all(port_open(loc.port) for loc in locations), servers)
        workspace = self.workspace
        workspace.write_text(
            yaml.safe_dump(
                {
                    "load_from": [
                        {"grpc_server": {"host": "127.0.0.1", "port": loc.port, "location_name": loc.name}}
                        for loc in locations
                    ]
                }
            )
        )
        level = settings.log_level
        webserver = self.spawn(
            "dagster-webserver",
            [
                str(BIN / "dagster-webserver"),
                "-w",
                str(workspace),
                "-h",
                "127.0.0.1",
                "-p",
                str(settings.ui_port),
                "--log-level",
                level,
                "--dagster-log-level",
                level,
            ],
        )
        names = {loc.name for loc in locations}
        self.wait_until("Dagster UI", lambda: self._locations_loaded(names), [webserver, *servers])
        errors = {name: error for name, error in self.ui.locations().items() if error}
        for name, error in errors.items():
            log(f"code location {name} failed to load: {error.splitlines()[0] if error else ''}")
        log(f"Dagster UI on {settings.ui_url} ({self.elapsed()} after start)")

    def start_daemon(self) -> None:
        """Start the daemon (schedules, sensors, the run queue) on the same code servers."""
        self.spawn(
            "dagster-daemon",
            [
                str(BIN / "dagster-daemon"),
                "run",
                "-w",
                str(self.workspace),
                "--log-level",
                self.settings.log_level,
            ],
        )

    def _locations_loaded(self, names: set[str]) -> bool:
        if not self.ui.answers():
            return False
        try:
            return names <= set(self.ui.locations())
        except UiError:
            return False

    def serve(self) -> None:
        """Wait for a stop signal; a process that dies on its own stops the demo too."""
        while not self.stop.requested:
            for child in self.children:
                if not child.alive():
                    log(f"{child.name} exited with {child.process.returncode}: stopping")
                    return
            time.sleep(StopSignal.POLL_SECONDS)

    def shutdown(self) -> None:
        """Stop everything: daemon, then cancel runs, then webserver, code servers and sandbox."""
        log(f"stopping ({signal.Signals(self.stop.last).name})" if self.stop.requested else "stopping")
        by_name = {child.name: child for child in self.children}
        daemon = by_name.get("dagster-daemon")
        if daemon is not None:
            self._stop_children([daemon])
        webserver = by_name.get("dagster-webserver")
        if webserver is not None and webserver.alive():
            self._cancel_runs()
        rest = [child for child in reversed(self.children) if child is not daemon]
        self._stop_children(rest)
        log("stopped")

    def _stop_children(self, children: list[Child]) -> None:
        """SIGTERM each leader, wait (bounded) for every group to end, then kill what is left."""
        for child in children:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + (1 if self.stop.hurry else GRACE_SECONDS)
        while time.monotonic() < deadline and any(child.group_alive() for child in children):
            if self.stop.hurry:
                break
            time.sleep(0.1)
        for child in children:
            if child.group_alive():
                waited = "at once (second stop signal)" if self.stop.hurry else f"within {GRACE_SECONDS} s"
                log(f"{child.name} did not stop {waited}: killed")
                child.kill_group()

    def _cancel_runs(self) -> None:
        """Cancel every queued or running run, as the UI's Terminate button does (bounded)."""
        try:
            runs = self.ui.runs_in_progress()
            if not runs:
                return
            log(f"cancelling {len(runs)} run(s) in progress")
            self.ui.terminate(runs)
            deadline = time.monotonic() + CANCEL_SECONDS
            while runs and time.monotonic() < deadline and not self.stop.hurry:
                time.sleep(0.5)
                runs = self.ui.runs_in_progress()
            if runs:
                log(f"{len(runs)} run(s) did not end within {CANCEL_SECONDS} s: marked cancelled")
                self.ui.terminate(runs, force=True)
            self.free_leaked_slots()
        except UiError as exc:
            log(f"could not cancel runs: {exc}")

    def free_leaked_slots(self) -> None:
        """Free the concurrency pool slots still held by runs that ended."""
        # A run cancelled while a step starts keeps that step's slot, which blocks the pool (a
        # supplier's fetches) for good: Dagster frees it only with run monitoring's
        # `free_slots_after_run_end_seconds`, which the local instance does not set.
        try:
            freed = self.ui.free_slots_of_finished_runs()
        except UiError as exc:
            log(f"could not free the pool slots of ended runs: {exc}")
            return
        if freed:
            log(f"freed the pool slots of {len(freed)} ended run(s)")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running(settings: Settings, stop: StopSignal) -> Iterator[Demo]:
    """The demo stack for a with-block; always shut down on the way out, whatever happened."""
    demo = Demo(settings, stop)
    try:
        yield demo
    finally:
        demo.shutdown()


def main() -> None:
    """Start the stack, bootstrap the data, serve until a stop signal; then stop everything."""
    settings = Settings.from_env()
    stop = StopSignal()
    stop.install()
    from sandbox.demo_bootstrap import Bootstrap

    with running(settings, stop) as demo:
        try:
            demo.start()
            bootstrap = Bootstrap(demo.ui, settings, stop, log)
            bootstrap.before_daemon()
            # Left by a demo that was killed before it could cancel its runs cleanly.
            demo.free_leaked_slots()
            demo.start_daemon()
            bootstrap.run()
            log(f"ready ({demo.elapsed()} after start); Ctrl-C stops everything")
            demo.serve()
        except StopRequested:
            pass


if __name__ == "__main__":
    main()
