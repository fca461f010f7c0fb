"""Measure what the k8s resource requests and limits in deploy/k8s/values.yaml are sized from.

Run from the repository root: `.venv/bin/python deploy/k8s/measure_resources.py` (BENCH_SCALE scales the
1M SKUs down, as for `python -m bench`). It prints one line per process kind:

- the two code servers (`dagster api grpc`, as each user deployment runs them): RSS once loaded, CPU
  while idle;
- the webserver and the daemon, pointed at those code servers: RSS and CPU idle, then during a sweep;
- a sweep run worker: the process the K8sRunLauncher starts for one run of `price_sweep_job` over all 16
  batches of a 1M-SKU catalog x 4 file suppliers (the `bench sweep` data), as `dagster job execute`:
  peak RSS and CPU seconds from the kernel's accounting of the exited process (wait4).

Memory is read from /proc (VmRSS, VmHWM), CPU from /proc/<pid>/stat; the machine is shared, so CPU
figures are upper bounds of what the process needed, not what it could have used.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench._harness import deployment_env, scaled  # noqa: E402
from bench.sweep import SERVICE_CONFIG, SKUS, sensor_plan, write_data, write_registry  # noqa: E402
from pricing_assets.partitions import catalog_batch_partitions  # noqa: E402
from resources.warehouse import Warehouse  # noqa: E402
from sandbox.server import free_port  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IDLE_SECONDS = float(os.environ.get("MEASURE_IDLE_SECONDS", "30"))
SWEEP_RUNS = int(os.environ.get("MEASURE_SWEEP_RUNS", "2"))
# What a step pod of the k8s_job_executor would hold: each sweep step alone in its own run worker.
STEPS = ["supplier_offers__alpha", "best_offers", "storefront_prices"]


@dataclass
class Sample:
    """Memory and CPU of one process over a window."""

    rss_mib: float
    peak_mib: float
    cpu_cores: float

    def __str__(self) -> str:
        return f"RSS {self.rss_mib:.0f} MiB (peak {self.peak_mib:.0f} MiB), CPU {self.cpu_cores:.3f} cores"


def _status_kib(pid: int, field: str) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith(field + ":"):
            return int(row.split()[1])
    raise KeyError(field)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def observe(pid: int, seconds: float) -> Sample:
    """RSS at the end, the peak so far, and mean CPU (cores) of `pid` over `seconds`."""
    cpu_before, started = _cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    cpu = (_cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
    return Sample(_status_kib(pid, "VmRSS") / 1024, _status_kib(pid, "VmHWM") / 1024, cpu)


@contextmanager
def started(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a long-running process in its own process group; stop that group afterwards."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    """Wait (bounded) until something listens on 127.0.0.1:port."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.args} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listening on {port} after {timeout} s")


def run_sweep(env: dict[str, str], tags: dict[str, str], op: str | None = None) -> tuple[float, float, float]:
    """One sweep run (or one step of it) as a run worker: (wall s, CPU s, peak RSS MiB) of the process."""
    command = [sys.executable, "-m", "dagster", "job", "execute", "-m", "bench._sweep_location", "-a", "defs"]
    command += ["-j", "price_sweep_job", "--tags", json.dumps(tags)]
    if op:
        command += ["-o", op]
    begin = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - begin
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(
            f"sweep run failed: {process.stderr.read().decode()[-3000:] if process.stderr else ''}"
        )
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    """Start the processes a deployment runs, measure each, print one line per process kind."""
    n = scaled(SKUS, minimum=2000)
    with tempfile.TemporaryDirectory(prefix="measure-k8s-") as folder:
        base = Path(folder)
        home = base / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
        registry = base / "registry.yaml"
        write_registry(registry)
        warehouse = Warehouse(base_dir=str(base / "warehouse"))
        write_data(warehouse, n)
        env = deployment_env(
            home=home, warehouse=warehouse.root(), registry=registry, service_config=SERVICE_CONFIG
        )
        ports = {"pricing": free_port(), "orders": free_port()}
        modules = {"pricing": "pricing_assets.definitions", "orders": "orders_assets.definitions"}
        workspace = base / "workspace.yaml"
        servers = [
            {"grpc_server": {"host": "127.0.0.1", "port": port, "location_name": name}}
            for name, port in ports.items()
        ]
        workspace.write_text(json.dumps({"load_from": servers}))
        grpc = [sys.executable, "-m", "dagster", "api", "grpc", "--host", "127.0.0.1"]
        web_port = free_port()
        with (
            started(
                [*grpc, "-m", modules["pricing"], "-a", "defs", "-p", str(ports["pricing"])],
                env,
                base / "pricing.log",
            ) as pricing,
            started(
                [*grpc, "-m", modules["orders"], "-a", "defs", "-p", str(ports["orders"])],
                env,
                base / "orders.log",
            ) as orders,
        ):
            wait_for_port(ports["pricing"], pricing)
            wait_for_port(ports["orders"], orders)
            web = [
                str(Path(sys.executable).parent / "dagster-webserver"),
                "-h",
                "127.0.0.1",
                "-p",
                str(web_port),
            ]
            daemon = [str(Path(sys.executable).parent / "dagster-daemon"), "run"]
            with (
                started([*web, "-w", str(workspace)], env, base / "web.log") as webserver,
                started([*daemon, "-w", str(workspace)], env, base / "daemon.log") as daemon_process,
            ):
                wait_for_port(web_port, webserver)
                time.sleep(10)  # the daemon's first ticks load both locations
                for name, process in {
                    "code server pricing": pricing,
                    "code server orders": orders,
                    "webserver": webserver,
                    "daemon": daemon_process,
                }.items():
                    print(f"{name} idle: {observe(process.pid, IDLE_SECONDS)}", flush=True)
                plan = sensor_plan(catalog_batch_partitions(16), 5)
                for index in range(SWEEP_RUNS):
                    for request in plan:
                        with ThreadPoolExecutor(1) as pool:
                            sweep = pool.submit(run_sweep, env, request.tags)
                            time.sleep(2)  # past the run worker's imports, into its steps
                            during = {
                                name: observe(process.pid, 5)
                                for name, process in {
                                    "webserver": webserver,
                                    "daemon": daemon_process,
                                }.items()
                            }
                            wall, cpu, peak = sweep.result()
                        for name, sample in during.items():
                            print(f"{name} during sweep run {index + 1}: {sample}", flush=True)
                        print(
                            f"sweep run {index + 1} ({n:,} SKUs x 4 suppliers, "
                            f"{request.tags['dagster/asset_partition_range_start']}.."
                            f"{request.tags['dagster/asset_partition_range_end']}): wall {wall:.1f} s, "
                            f"CPU {cpu:.1f} s ({cpu / wall:.2f} cores), peak RSS {peak:.0f} MiB",
                            flush=True,
                        )
                for op in STEPS:
                    wall, cpu, peak = run_sweep(env, plan[0].tags, op)
                    print(
                        f"step {op} alone (16 batches): wall {wall:.1f} s, CPU {cpu:.1f} s, "
                        f"peak RSS {peak:.0f} MiB",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
