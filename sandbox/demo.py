"""`make demo`: the sandbox (suppliers, CDN, storefront, orders DB) plus the Dagster UI, on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
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


def demo_environment(sandbox_port: int, home: Path) -> dict[str, str]:
    """The environment the sandbox and Dagster run with in the demo (existing values win)."""
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    defaults = {
        **DEMO_ENV,
        "SANDBOX_URL": sandbox_url,
        "STOREFRONT_URL": f"{sandbox_url}/storefront",
        # Used when STOREFRONT_ADAPTER=shopify: the sandbox's Shopify-compatible GraphQL endpoint.
        "SHOPIFY_SHOP_URL": f"{sandbox_url}/shopify",
        "SHOPIFY_ACCESS_TOKEN": "sandbox-shopify-token",
        "WAREHOUSE_DIR": str(ROOT / "warehouse"),
        "ORDERS_DB_URL": f"sqlite:///{ROOT / 'sandbox_data' / 'orders.db'}",
        "DAGSTER_HOME": str(home),
    }
    return {**os.environ, **{k: v for k, v in defaults.items() if not os.environ.get(k)}}


def prepare_home(home: Path, instance_dir: Path) -> None:
    """Create DAGSTER_HOME with the chosen instance config (local SQLite by default)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(instance_dir / "dagster.yaml", home / "dagster.yaml")


def wait_for(url: str, process: subprocess.Popen[bytes], seconds: float) -> None:
    """Poll url until it answers 200, the process dies, or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args[0]} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {seconds:.0f} s")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Start the sandbox, then `dagster dev` on both code locations; Ctrl-C stops both."""
    sandbox_port = int(os.environ.get("SANDBOX_PORT", "8700"))
    ui_port = os.environ.get("DAGSTER_PORT", "3000")
    home = Path(os.environ.get("DAGSTER_HOME") or ROOT / ".dagster_home")
    prepare_home(home, ROOT / os.environ.get("DAGSTER_INSTANCE", "."))
    env = demo_environment(sandbox_port, home)
    (ROOT / "sandbox_data").mkdir(exist_ok=True)
    children: list[subprocess.Popen[bytes]] = []
    # SIGTERM (not only Ctrl-C) must also stop the children, or dagster dev outlives the demo.
    signal.signal(signal.SIGTERM, _interrupt)
    sandbox = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--port",
            str(sandbox_port),
            "--orders-db",
            "sandbox_data/orders.db",
        ],
        cwd=ROOT,
        env=env,
    )
    children.append(sandbox)
    try:
        wait_for(f"http://127.0.0.1:{sandbox_port}/_health", sandbox, 120)
        print(f"sandbox: http://127.0.0.1:{sandbox_port}  (storefront pushes: /storefront/_pushes)")
        print(f"Dagster UI: http://127.0.0.1:{ui_port}")
        dagster = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster"),
                "dev",
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                ui_port,
            ],
            cwd=ROOT,
            env=env,
        )
        children.append(dagster)
        dagster.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for process in reversed(children):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    main()
