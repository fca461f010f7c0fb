"""cdn_feed: a 1M-row encrypted CSV to validated Parquet, project path vs `openssl enc -d` + polars.

Project: `pricing_assets.supplier_files.cache_price_file`, exactly what `supplier_files/<id>` runs after
the download: streamed decrypt, parse, validation (exact decimals, quarantine), atomic Parquet write.
Baseline: `openssl enc -d` in a subprocess writing the plaintext to a file, `polars.read_csv` (float
prices, no validation), `write_parquet`. Same encrypted file, same process, alternating runs. Peak
memory of the project path is measured in a fresh subprocess (VmHWM after a reset, minus the RSS
before the run) and reported against the plaintext size (target <= 4x).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from bench._harness import alternate, line, scaled
from resources.cdn_crypto import encrypt_openssl
from resources.config import CdnFileConfig, SupplierEntry
from resources.warehouse import Warehouse

NAME = "cdn_feed"
TARGET = 1.3
MEMORY_TARGET = 4.0
ROWS = 1_000_000
SEED = 20_240_604
PASSPHRASE = "bench-cdn-passphrase"
PASS_ENV = "CDN_FEED_BENCH_PASSPHRASE"
OPENSSL_DECRYPT = ["openssl", "enc", "-d", "-aes-256-cbc", "-pbkdf2", "-pass", f"env:{PASS_ENV}"]


def make_plaintext(rows: int, seed: int = SEED) -> bytes:
    """A deterministic price file: sku,price,currency,stock (about 27 bytes a row)."""
    rng = random.Random(seed)
    lines = ["sku,price,currency,stock"]
    for i in range(rows):
        stock = "" if rng.random() < 0.1 else str(rng.randrange(0, 200))
        lines.append(f"SKU-{i:07d},{rng.randrange(100, 99_999) / 100:.2f},EUR,{stock}")
    return ("\n".join(lines) + "\n").encode()


def supplier_entry() -> SupplierEntry:
    """The registry entry the benchmark's file follows (OpenSSL defaults: PBKDF2-SHA256, 10000)."""
    return SupplierEntry(
        id="bench",
        kind="cdn_file",
        base_url="http://127.0.0.1:1",
        cdn=CdnFileConfig(path="/bench/prices.csv.enc", passphrase_env=PASS_ENV, base64="no"),
    )


def project(encrypted: Path, workdir: Path) -> int:
    """The asset's code path from downloaded file to cached Parquet; returns the rows cached."""
    from pricing_assets.supplier_files import cache_price_file
    from resources.cdn_state import CdnCacheState

    price_file = cache_price_file(
        encrypted,
        supplier_entry(),
        passphrase=PASSPHRASE.encode(),
        warehouse=Warehouse(base_dir=str(workdir / "warehouse")),
        cdn_state=CdnCacheState(base_dir=str(workdir / "warehouse")),
        fetched_at=datetime.now(UTC),
        known_currencies={"EUR"},
        quarantine_max_share=0.2,
        catalog_batches=16,
    )
    return price_file.offers.height


def baseline(encrypted: Path, workdir: Path) -> int:
    """openssl enc -d (subprocess) + polars.read_csv + write_parquet; returns the rows written."""
    plain = workdir / "baseline.csv"
    subprocess.run(
        [*OPENSSL_DECRYPT, "-in", str(encrypted), "-out", str(plain)],
        check=True,
        env={**os.environ, PASS_ENV: PASSPHRASE},
    )
    frame = pl.read_csv(plain)
    frame.write_parquet(workdir / "baseline.parquet")
    plain.unlink()
    return frame.height


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _status_kib(field: str) -> int:
    for text in Path("/proc/self/status").read_text().splitlines():
        if text.startswith(field + ":"):
            return int(text.split()[1])
    raise KeyError(field)


def measure_memory(encrypted: Path, workdir: Path) -> dict[str, float]:
    """In a fresh process: peak RSS growth of the first full-size project run, in bytes (Linux /proc)."""
    # Warm up imports and thread pools on a small file only: a full-size warm-up would leave
    # its freed memory in the allocator and hide the real peak.
    small = workdir / "warmup.csv.enc"
    small.write_bytes(encrypt_openssl(make_plaintext(1000), PASSPHRASE))
    project(small, workdir / "warmup")
    before = _status_kib("VmRSS")
    if not _reset_peak():
        raise OSError("cannot reset the peak RSS (/proc/self/clear_refs)")
    project(encrypted, workdir)
    peak = _status_kib("VmHWM")
    return {"peak_growth": (peak - before) * 1024.0, "peak_rss": peak * 1024.0}


def _memory_in_subprocess(encrypted: Path, workdir: Path) -> dict[str, float] | None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.cdn_feed", "--memory", str(encrypted), str(workdir)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    if result.returncode != 0:
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def run() -> str:
    """Run the benchmark and return its docs/architecture.md §10 line."""
    rows = scaled(ROWS, minimum=1000)
    with tempfile.TemporaryDirectory(prefix="bench-cdn-") as tmp:
        workdir = Path(tmp)
        plaintext = make_plaintext(rows)
        encrypted = workdir / "prices.csv.enc"
        encrypted.write_bytes(encrypt_openssl(plaintext, PASSPHRASE, salt=random.Random(SEED).randbytes(8)))
        plain_size = len(plaintext)
        del plaintext
        counts = {project(encrypted, workdir), baseline(encrypted, workdir)}
        if counts != {rows}:
            raise RuntimeError(f"project and baseline disagree on the row count: {sorted(counts)} vs {rows}")
        timing = alternate(
            lambda: project(encrypted, workdir), lambda: baseline(encrypted, workdir), repeats=5
        )
        memory = _memory_in_subprocess(encrypted, workdir)
    if memory is None:
        memory_detail = "peak memory not measured (needs Linux /proc)"
    else:
        factor = memory["peak_growth"] / plain_size
        memory_detail = (
            f"peak memory +{memory['peak_growth'] / 1e6:.0f} MB = {factor:.2f}x plaintext "
            f"(target <= {MEMORY_TARGET:g}x)"
        )
    detail = (
        f"project {timing.project * 1000:.0f} ms vs openssl+read_csv+write_parquet "
        f"{timing.baseline * 1000:.0f} ms (medians of 5), {rows:,} rows, "
        f"{plain_size / 1e6:.1f} MB plaintext; {memory_detail}"
    )
    return line(NAME, timing.ratio, TARGET, detail)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory"]:
        print(json.dumps(measure_memory(Path(sys.argv[2]), Path(sys.argv[3]))))
    else:
        print(run())
