"""supplier_files/<supplier> against the sandbox CDN over real HTTP, and the download client's rules."""

from __future__ import annotations

import base64
import csv
import fcntl
import hashlib
import io
import json
import shutil
import subprocess
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import polars as pl
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pricing_assets import supplier_files as sf
from resources.cdn_crypto import CdnHttpError, IntegrityError, TooLargeError, TruncatedError
from resources.cdn_download import CdnFileClient
from resources.cdn_file import CdnFile, verify_checksum, verify_signature
from resources.cdn_state import CdnCacheState
from resources.config import Registry, RetryConfig
from resources.schemas import OFFERS_SCHEMA
from resources.service_config import ServiceConfigResource
from resources.warehouse import Warehouse, WarehouseIOManager
from sandbox.cdn import signing_public_key_pem
from tests.conftest import SANDBOX_ENV, Sandbox

PASSPHRASE = SANDBOX_ENV["DELTA_CDN_PASSPHRASE"]
KEY = ["supplier_files", "delta"]
QUARANTINE_KEY = ["supplier_files_quarantine", "delta"]


def make_registry(url: str, catalog_batches: int = 16, **cdn: Any) -> Registry:
    """A registry with only the CDN supplier, pointed at the sandbox, retrying fast."""
    return Registry.model_validate(
        {
            "store_currency": "EUR",
            "catalog_batches": catalog_batches,
            "fx": {"USD": "0.92", "GBP": "1.17"},
            "suppliers": [
                {
                    "id": "delta",
                    "kind": "cdn_file",
                    "base_url": f"{url}/cdn",
                    "timeout_seconds": 5,
                    "retry": {
                        "max_attempts": 2,
                        "backoff_initial_seconds": 0.01,
                        "backoff_max_seconds": 0.05,
                    },
                    "cdn": {
                        "path": "/delta/prices.csv.enc",
                        "passphrase_env": "DELTA_CDN_PASSPHRASE",
                        "kdf": "pbkdf2",
                        "digest": "sha256",
                        "iterations": 10000,
                        "base64": "auto",
                        **cdn,
                    },
                }
            ],
        }
    )


class Feed:
    """Runs supplier_files/delta with resources pointed at a temp warehouse and the sandbox."""

    def __init__(self, sandbox: Sandbox, tmp_path: Path) -> None:
        self.sandbox = sandbox
        self.warehouse = Warehouse(base_dir=str(tmp_path / "warehouse"))
        self.cdn_state = CdnCacheState(base_dir=str(tmp_path / "warehouse"))
        self.tmp_dir = tmp_path / "downloads"
        self.tmp_dir.mkdir()
        self.service_config = "{}"

    def run(self, catalog_batches: int = 16, **cdn: Any) -> dg.ExecuteInProcessResult:
        """Materialize the asset once (not raising on failure)."""
        assets = sf.build_supplier_file_assets(make_registry(self.sandbox.url, catalog_batches, **cdn))
        return dg.materialize(assets, resources=self.resources(), raise_on_error=False)

    def resources(self) -> dict[str, Any]:
        """The asset's resources, pointed at the temp warehouse."""
        return {
            "io_manager": WarehouseIOManager(base_dir=str(self.warehouse.root())),
            "warehouse": self.warehouse,
            "cdn_state": self.cdn_state,
            "service_config": ServiceConfigResource(override_json=self.service_config),
            "cdn_files": CdnFile(tmp_dir=str(self.tmp_dir)),
        }

    def metadata(self, result: dg.ExecuteInProcessResult) -> dict[str, Any]:
        """The materialization's metadata as plain values."""
        assert result.success, self.failure(result)
        [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == KEY]
        return {k: v.value for k, v in event.materialization.metadata.items()}

    @staticmethod
    def failure(result: dg.ExecuteInProcessResult) -> str:
        """The step failure's description (empty when the run succeeded)."""
        failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        if not failures:
            return ""
        error = failures[0].step_failure_data.user_failure_data
        return error.description if error else str(failures[0].step_failure_data.error)

    def cache_bytes(self) -> bytes:
        """The cached Parquet file's bytes."""
        return Path(str(self.warehouse.path(KEY))).read_bytes()

    def state(self) -> dict[str, Any]:
        """The cache's state (the cdn_state resource's)."""
        return self.cdn_state.load("delta")

    def served_rows(self) -> list[tuple[str, Decimal, str, int | None]]:
        """What the sandbox serves right now, decrypted by the real openssl CLI (the oracle)."""
        return sorted(
            (r["sku"], Decimal(r["price"]), r["currency"], int(r["stock"]) if r["stock"] else None)
            for r in csv.DictReader(io.StringIO(self.served_plaintext().decode()))
        )

    def served_plaintext(self) -> bytes:
        """The file the sandbox serves right now, decrypted by the openssl CLI."""
        body = httpx.get(f"{self.sandbox.url}/cdn/delta/prices.csv.enc", timeout=10).content
        openssl = shutil.which("openssl")
        assert openssl, "the openssl CLI is required"
        args = ["-a"] if body.startswith(b"U2FsdGVk") else []
        return subprocess.run(
            [openssl, "enc", "-d", "-aes-256-cbc", "-pbkdf2", *args, "-pass", "env:P"],
            input=body,
            capture_output=True,
            check=True,
            env={"P": PASSPHRASE, "PATH": "/usr/bin:/bin"},
        ).stdout


@pytest.fixture
def feed(sandbox: Sandbox, tmp_path: Path) -> Feed:
    """A feed runner on a reset sandbox and an empty warehouse."""
    return Feed(sandbox, tmp_path)


def cached_rows(feed: Feed) -> list[tuple[str, Decimal, str, int | None]]:
    """The cached offers as comparable tuples."""
    return sorted(feed.warehouse.read(KEY).select("sku", "price", "currency", "stock").iter_rows())


# ---------------------------------------------------------------- the asset against the sandbox


def test_first_run_caches_exactly_the_served_rows(feed: Feed) -> None:
    meta = feed.metadata(feed.run())
    assert meta["unchanged"] is False
    assert cached_rows(feed) == feed.served_rows()
    assert meta["rows"] == len(feed.served_rows()) > 100
    assert meta["quarantined"] == 0
    assert meta["base64"] is True  # the registry default makes the sandbox serve `openssl -a` text
    # The offers contract, then the layout columns (each row's catalog batch; docs/cdn_feed.md).
    assert feed.warehouse.read(KEY).schema == pl.Schema({**OFFERS_SCHEMA, **sf.LAYOUT_COLUMNS})
    assert feed.state()["etag"] == meta["etag"]
    assert list(feed.tmp_dir.iterdir()) == []  # the download was cleaned up


def test_unchanged_file_is_not_decrypted_again(feed: Feed, monkeypatch: pytest.MonkeyPatch) -> None:
    feed.metadata(feed.run())
    before = feed.cache_bytes()
    first_confirmed = feed.state()["confirmed_at"]

    def must_not_decrypt(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unchanged file was decrypted again")

    monkeypatch.setattr(sf, "cache_price_file", must_not_decrypt)
    meta = feed.metadata(feed.run())
    assert meta["unchanged"] is True
    assert meta["http_status"] == 304
    assert feed.sandbox.counters()["cdn.delta.not_modified"] == 1
    assert feed.cache_bytes() == before
    assert feed.state()["confirmed_at"] > first_confirmed


def test_regenerated_file_is_downloaded_and_decrypted_again(feed: Feed) -> None:
    first = feed.metadata(feed.run())
    httpx.post(f"{feed.sandbox.url}/cdn/delta/regenerate", timeout=10).raise_for_status()
    second = feed.metadata(feed.run())
    assert second["unchanged"] is False
    assert second["etag"] != first["etag"]
    assert cached_rows(feed) == feed.served_rows()


def test_changed_registry_settings_bypass_the_conditional_get(feed: Feed) -> None:
    feed.metadata(feed.run())
    before = feed.cache_bytes()
    result = feed.run(kdf="evp_bytestokey")  # same file on the CDN, wrong KDF configured now
    assert not result.success
    assert "bad_decrypt" in feed.failure(result)
    assert feed.cache_bytes() == before


def test_a_new_batch_count_lays_the_cache_out_again(feed: Feed) -> None:
    # The cache is laid out by catalog batch: with another batch count the unchanged file is read
    # again (not a 304) and cached for the new count, the same offers in it.
    feed.metadata(feed.run())
    before = feed.warehouse.read(KEY)
    assert set(before.get_column("catalog_batches")) == {16}
    assert feed.metadata(feed.run())["unchanged"] is True
    meta = feed.metadata(feed.run(catalog_batches=4))
    assert meta["unchanged"] is False
    after = feed.warehouse.read(KEY)
    assert set(after.get_column("catalog_batches")) == {4} and after.get_column("batch").is_sorted()
    offers = [name for name in OFFERS_SCHEMA if name != "fetched_at"]  # re-read now: a new fetched_at
    assert after.select(offers).sort("sku").equals(before.select(offers).sort("sku"))


@pytest.mark.parametrize(
    ("faults", "cdn", "cause"),
    [
        ({"rekeyed": True}, {}, "bad_decrypt"),
        ({"truncated": True}, {}, "truncated"),
        ({"base64": "no"}, {"kdf": "evp_bytestokey", "digest": "md5"}, "bad_decrypt"),
        ({"outage": True}, {}, "http_error"),
        ({"status": 404}, {}, "http_error"),
        ({"base64": "no"}, {"max_bytes": 1000}, "too_large"),
        ({"bad_rows": 100_000}, {}, "bad_rows"),
        ({"base64": "no"}, {"base64": "yes"}, "bad_magic"),
    ],
    ids=["rekeyed", "truncated", "wrong-kdf", "outage", "not-found", "too-large", "bad-rows", "not-base64"],
)
def test_failures_keep_the_previous_cache_and_name_the_cause(
    feed: Feed, faults: dict[str, Any], cdn: dict[str, Any], cause: str
) -> None:
    good = feed.metadata(feed.run())
    before = feed.cache_bytes()
    offers_before = sf.read_cached_offers(feed.warehouse, "delta", ["SKU-000000", "SKU-000001", "SKU-000002"])
    feed.sandbox.control(faults={"delta": faults})

    result = feed.run(**cdn)

    assert not result.success
    description = feed.failure(result)
    if cause == "bad_decrypt" and "unexpected_header" in description:
        # The 1 wrong key in 256 whose padding happens to check out is caught by the header.
        cause = "unexpected_header"
    assert description.startswith(f"supplier_files/delta: {cause}:"), description
    assert "previous cache kept" in description
    assert PASSPHRASE not in description
    assert feed.cache_bytes() == before
    assert feed.state()["last_error"]["cause"] == cause
    assert feed.state()["etag"] == good["etag"]
    after = sf.read_cached_offers(feed.warehouse, "delta", ["SKU-000000", "SKU-000001", "SKU-000002"])
    assert after.equals(offers_before)
    assert PASSPHRASE not in json.dumps(feed.state())


def test_a_few_bad_rows_are_quarantined_and_the_rest_cached(feed: Feed) -> None:
    feed.sandbox.control(faults={"delta": {"bad_rows": 3}})
    meta = feed.metadata(feed.run())
    quarantine = feed.warehouse.read(sf.quarantine_key("delta"))
    assert meta["quarantined"] == quarantine.height == 3
    assert set(quarantine.get_column("reason")) == {"price is not a decimal number"}
    served = feed.served_plaintext().decode().splitlines()[1:]
    assert sum("n/a" in line for line in served) == 3
    assert meta["rows"] == len(served) - 3


def test_a_refresh_shows_no_beta_warning_in_the_run(feed: Feed) -> None:
    # Beta parameters warn in every run's log (the demo's terminal): the asset uses none.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feed.sandbox.control(faults={"delta": {"bad_rows": 1}})
        assert feed.run().success
    assert [str(w.message) for w in caught if issubclass(w.category, dg.BetaWarning)] == []


def test_corrupted_bytes_never_reach_the_cache_as_offers(feed: Feed) -> None:
    feed.sandbox.control(faults={"delta": {"corrupted": 1}})
    meta = feed.metadata(feed.run())
    # One flipped ciphertext byte garbles its 16-byte block: the damaged line is quarantined.
    assert meta["quarantined"] >= 1
    quarantine = feed.warehouse.read(sf.quarantine_key("delta"))
    cached = cached_rows(feed)
    assert not {row[0] for row in cached} & set(quarantine.get_column("sku").drop_nulls())
    feed.sandbox.control(faults={"delta": None})
    clean = feed.served_rows()
    assert set(cached) < set(clean)  # every cached row is a true row of the file
    assert len(cached) >= len(clean) - 2 * meta["quarantined"]


def test_disabled_supplier_is_skipped_visibly_without_a_request(feed: Feed) -> None:
    feed.service_config = json.dumps({"suppliers": {"delta": {"enabled": False}}})
    meta = feed.metadata(feed.run())
    assert meta == {"skipped": "disabled"}
    assert feed.sandbox.counters().get("cdn.delta.requests", 0) == 0
    assert not feed.warehouse.exists(KEY)


def test_missing_passphrase_is_a_failure_naming_the_variable(
    feed: Feed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DELTA_CDN_PASSPHRASE")
    result = feed.run()
    assert not result.success
    assert "DELTA_CDN_PASSPHRASE" in feed.failure(result)
    assert "no previous cache" in feed.failure(result)


def test_read_cached_offers_serves_the_cache_until_stale(feed: Feed) -> None:
    assert sf.read_cached_offers(feed.warehouse, "delta", ["SKU-000000"]).height == 0  # nothing cached yet
    feed.metadata(feed.run())
    served = {row[0]: row for row in feed.served_rows()}
    wanted = [*list(served)[:5], "SKU-NOT-THERE"]
    offers = sf.read_cached_offers(feed.warehouse, "delta", wanted)
    assert sorted(offers.get_column("sku")) == sorted(list(served)[:5])
    assert offers.schema == pl.Schema(OFFERS_SCHEMA)
    # The supplier assets pass the batch's SKU column as a Series (any name): same rows.
    as_series = sf.read_cached_offers(feed.warehouse, "delta", pl.Series("wanted", wanted))
    assert as_series.sort("sku").equals(offers.sort("sku"))
    confirmed = datetime.fromisoformat(feed.state()["confirmed_at"])
    ttl = timedelta(minutes=30)
    fresh = sf.read_cached_offers(feed.warehouse, "delta", wanted, staleness_ttl=ttl, now=confirmed + ttl)
    assert fresh.height == 5
    stale = sf.read_cached_offers(
        feed.warehouse, "delta", wanted, staleness_ttl=ttl, now=confirmed + ttl + timedelta(seconds=1)
    )
    assert stale.height == 0


def test_a_304_keeps_the_cached_offers_fresh(feed: Feed) -> None:
    feed.metadata(feed.run())
    sku = feed.served_rows()[0][0]
    first = sf.read_cached_offers(feed.warehouse, "delta", [sku]).get_column("fetched_at")[0]
    feed.metadata(feed.run())  # 304
    second = sf.read_cached_offers(feed.warehouse, "delta", [sku]).get_column("fetched_at")[0]
    assert second > first


def test_assets_schedule_and_pool_follow_the_registry() -> None:
    registry = make_registry("http://127.0.0.1:9")
    assets = sf.build_supplier_file_assets(registry)
    assert [a.keys for a in assets] == [{dg.AssetKey(KEY), dg.AssetKey(QUARANTINE_KEY)}]
    assert [a.op.pool for a in assets] == ["supplier_delta"]
    schedule = sf.build_supplier_file_schedule(assets)
    assert schedule.cron_schedule == "*/30 * * * *"
    assert schedule.execution_timezone == "UTC"
    defs = dg.Definitions(
        assets=assets,
        schedules=[schedule],
        resources={
            "warehouse": Warehouse(base_dir="/nonexistent"),
            "cdn_state": CdnCacheState(base_dir="/nonexistent"),
            "service_config": ServiceConfigResource(),
            "cdn_files": CdnFile(),
        },
    )
    job = defs.resolve_job_def(schedule.job_name)
    assert set(job.asset_layer.executable_asset_keys) == {dg.AssetKey(KEY), dg.AssetKey(QUARANTINE_KEY)}
    no_files = Registry.model_validate(
        {"suppliers": [{"id": "alpha", "kind": "rest_batch", "base_url": "http://127.0.0.1:9"}]}
    )
    assert sf.build_supplier_file_assets(no_files) == []


# ---------------------------------------------------------------- download client rules


class Recorder:
    """A MockTransport handler answering from a script and recording requests."""

    def __init__(self, *responses: httpx.Response | Exception | Callable[[], httpx.Response]) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(answer, Exception):
            raise answer
        return answer() if callable(answer) else answer


def client(handler: Recorder, sleeps: list[float], **kwargs: Any) -> CdnFileClient:
    """A download client on a mock transport that records its sleeps instead of sleeping."""
    retry = RetryConfig(max_attempts=3, backoff_initial_seconds=0.5, backoff_max_seconds=1.0)
    return CdnFileClient(retry=retry, transport=httpx.MockTransport(handler), sleep=sleeps.append, **kwargs)


URL = "http://cdn.invalid/delta/prices.csv.enc"


def test_download_retries_server_errors_then_succeeds(tmp_path: Path) -> None:
    handler = Recorder(
        httpx.Response(500), httpx.ConnectError("refused"), httpx.Response(200, content=b"x" * 10)
    )
    sleeps: list[float] = []
    with client(handler, sleeps, tmp_dir=str(tmp_path)).download(URL) as result:
        assert result.path is not None and result.path.read_bytes() == b"x" * 10
        assert result.attempts == 3
        path = result.path
    assert not path.exists()
    assert len(sleeps) == 2 and all(0 <= s <= 1.0 for s in sleeps)


def test_a_killed_runs_download_is_removed_by_the_next_one_but_a_live_one_is_kept(tmp_path: Path) -> None:
    """A download is locked while in use; `kill -9` drops the lock, and the next download cleans up."""
    orphan = tmp_path / ".cdn-download-killed.enc"
    orphan.write_bytes(b"Salted__ half a file")  # what a killed run leaves: no lock held
    live = tmp_path / ".cdn-download-live.enc"
    live.write_bytes(b"Salted__ being read")
    with live.open("rb") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)  # another run still decrypting it
        handler = Recorder(httpx.Response(200, content=b"x" * 10))
        with client(handler, [], tmp_dir=str(tmp_path)).download(URL) as result:
            assert result.path is not None and result.path.exists()
            assert not orphan.exists() and live.exists()
            # Our own download is locked too, so a concurrent download never removes it.
            with client(Recorder(httpx.Response(200, content=b"y")), [], tmp_dir=str(tmp_path)).download(URL):
                assert result.path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]


def test_download_honours_retry_after_within_its_cap() -> None:
    handler = Recorder(
        httpx.Response(429, headers={"Retry-After": "7"}),
        httpx.Response(503, headers={"Retry-After": "3600"}),
        httpx.Response(200, content=b"ok"),
    )
    sleeps: list[float] = []
    retry = RetryConfig(max_attempts=3, max_retry_after_seconds=60)
    downloader = CdnFileClient(retry=retry, transport=httpx.MockTransport(handler), sleep=sleeps.append)
    with downloader.download(URL) as result:
        assert result.size == 2
    assert sleeps == [7.0, 60.0]


def test_download_gives_up_after_max_attempts() -> None:
    handler = Recorder(httpx.Response(503))
    sleeps: list[float] = []
    with pytest.raises(CdnHttpError, match="HTTP 503") as caught, client(handler, sleeps).download(URL):
        pass
    assert len(handler.requests) == 3
    assert caught.value.status_code == 503


def test_client_errors_are_not_retried() -> None:
    handler = Recorder(httpx.Response(403))
    with pytest.raises(CdnHttpError, match="HTTP 403"), client(handler, []).download(URL):
        pass
    assert len(handler.requests) == 1


def test_conditional_headers_are_sent_and_304_means_unchanged() -> None:
    handler = Recorder(httpx.Response(304, headers={"ETag": '"v1"'}))
    with client(handler, []).download(
        URL, etag='"v1"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT"
    ) as result:
        assert result.unchanged and result.path is None and result.etag == '"v1"'
    sent = handler.requests[0].headers
    assert sent["If-None-Match"] == '"v1"'
    assert sent["If-Modified-Since"] == "Mon, 01 Jan 2024 00:00:00 GMT"


def test_size_limit_applies_to_declared_and_streamed_length(tmp_path: Path) -> None:
    declared = Recorder(httpx.Response(200, content=b"x" * 101))
    with pytest.raises(TooLargeError), client(declared, [], max_bytes=100).download(URL):
        pass

    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield b"y" * 10

    streamed = Recorder(httpx.Response(200, content=chunks()))  # no Content-Length
    with (
        pytest.raises(TooLargeError),
        client(streamed, [], max_bytes=100, tmp_dir=str(tmp_path)).download(URL),
    ):
        pass
    assert list(tmp_path.iterdir()) == []


class _CutStream(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b"partial"
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def test_a_body_cut_short_is_truncated_after_retries(tmp_path: Path) -> None:
    handler = Recorder(lambda: httpx.Response(200, stream=_CutStream()))
    with pytest.raises(TruncatedError), client(handler, [], tmp_dir=str(tmp_path)).download(URL):
        pass
    assert len(handler.requests) == 3
    assert list(tmp_path.iterdir()) == []


def test_error_messages_leave_out_url_credentials_and_query() -> None:
    handler = Recorder(httpx.Response(404))
    url = "https://user:hunter2@cdn.invalid/prices.csv.enc?token=s3cret"
    with pytest.raises(CdnHttpError) as caught, client(handler, []).download(url):
        pass
    message = str(caught.value)
    assert "cdn.invalid/prices.csv.enc" in message
    assert "s3cret" not in message and "hunter2" not in message


# ---------------------------------------------------------------- the sandbox CDN itself


@pytest.mark.parametrize(
    ("settings", "openssl_args"),
    [
        ({"kdf": "evp_bytestokey", "digest": "md5", "base64": "one_line"}, ["-md", "md5", "-a", "-A"]),
        (
            {"iterations": 100000, "digest": "sha512", "base64": "no"},
            ["-pbkdf2", "-iter", "100000", "-md", "sha512"],
        ),
    ],
)
def test_sandbox_serves_what_openssl_decrypts_in_the_configured_mode(
    sandbox: Sandbox, settings: dict[str, Any], openssl_args: list[str]
) -> None:
    sandbox.control(faults={"delta": settings})
    body = httpx.get(f"{sandbox.url}/cdn/delta/prices.csv.enc", timeout=10).content
    openssl = shutil.which("openssl")
    assert openssl, "the openssl CLI is required"
    plain = subprocess.run(
        [openssl, "enc", "-d", "-aes-256-cbc", *openssl_args, "-pass", "env:P"],
        input=body,
        capture_output=True,
        check=True,
        env={"P": PASSPHRASE, "PATH": "/usr/bin:/bin"},
    ).stdout
    assert plain.startswith(b"sku,price,currency,stock\nSKU-")


def test_sandbox_conditional_get_regenerate_and_outage(sandbox: Sandbox) -> None:
    url = f"{sandbox.url}/cdn/delta/prices.csv.enc"
    first = httpx.get(url, timeout=10)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert httpx.get(url, headers={"If-None-Match": etag}, timeout=10).status_code == 304
    assert httpx.get(url, headers={"If-Modified-Since": modified}, timeout=10).status_code == 304
    httpx.post(f"{sandbox.url}/cdn/delta/regenerate", timeout=10).raise_for_status()
    second = httpx.get(url, headers={"If-None-Match": etag}, timeout=10)
    assert second.status_code == 200 and second.headers["ETag"] != etag
    assert second.content != first.content
    sandbox.control(faults={"delta": {"outage": True, "retry_after": 2}})
    outage = httpx.get(url, timeout=10)
    assert outage.status_code == 503 and outage.headers["Retry-After"] == "2"
    assert httpx.get(f"{sandbox.url}/cdn/nobody/prices.csv.enc", timeout=10).status_code == 404


# ---------------------------------------------------------------- integrity (issue 13)

SIDE = {"checksum_path": "/delta/prices.csv.enc.sha256"}
SIGNED = {"signature_path": "/delta/prices.csv.enc.sig", "signature_public_key": signing_public_key_pem()}


def check_result(result: dg.ExecuteInProcessResult) -> Any:
    """The file_integrity check evaluation of a run (recorded also when the step failed)."""
    [evaluation] = [
        e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    return evaluation


def test_a_published_checksum_is_verified_before_caching(feed: Feed) -> None:
    meta = feed.metadata(feed.run(**SIDE))
    assert meta["verified"] == "sha256"
    assert check_result(feed.run(**SIDE)).passed  # (a 304 keeps the verified file)
    good_cache = feed.cache_bytes()
    feed.sandbox.control(faults={"delta": {"corrupted": 1}})  # one byte flipped on the way
    result = feed.run(**SIDE)
    assert not result.success
    assert feed.failure(result).startswith("supplier_files/delta: integrity: the file's SHA-256 ")
    evaluation = check_result(result)
    assert not evaluation.passed and "does not match the checksum" in evaluation.description
    assert feed.cache_bytes() == good_cache  # held: the mangled SKU never reached the cache
    assert feed.state()["last_error"]["cause"] == "integrity"


def test_a_detached_signature_is_verified_before_caching(feed: Feed) -> None:
    assert feed.metadata(feed.run(**SIGNED))["verified"] == "signature"
    good_cache = feed.cache_bytes()
    feed.sandbox.control(faults={"delta": {"bad_signature": True}})
    # A new upload (new salt, new ETag) whose signature is wrong:
    httpx.post(f"{feed.sandbox.url}/cdn/delta/regenerate", timeout=10).raise_for_status()
    result = feed.run(**SIGNED)
    assert not result.success and "does not verify with the registry's public key" in feed.failure(result)
    assert feed.cache_bytes() == good_cache
    other_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = other_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    feed.sandbox.control(faults={"delta": None})
    wrong = feed.run(signature_path=SIGNED["signature_path"], signature_public_key=pem.decode())
    assert not wrong.success and feed.failure(wrong).startswith("supplier_files/delta: integrity:")


def test_a_missing_side_file_is_not_taken_as_verified(feed: Feed) -> None:
    feed.sandbox.control(faults={"delta": {"no_checksum": True}})
    result = feed.run(**SIDE)
    assert (
        not result.success and "checksum file" in feed.failure(result) and "HTTP 404" in feed.failure(result)
    )
    assert not feed.warehouse.exists(KEY)


def test_without_a_checksum_a_file_that_lost_many_skus_is_held_until_accepted(feed: Feed) -> None:
    feed.metadata(feed.run())
    good_cache, before = feed.cache_bytes(), feed.warehouse.read(KEY).height
    feed.sandbox.control(faults={"delta": {"drop_rows": 0.3}})
    held = feed.run()
    assert not held.success
    description = feed.failure(held)
    assert description.startswith("supplier_files/delta: held_shrunk: the new file has lost ")
    evaluation = check_result(held)
    assert not evaluation.passed
    sha = evaluation.metadata["held_sha256"].value
    assert f"accept_sha256: {sha}" in description
    assert feed.cache_bytes() == good_cache
    # A small shrink is normal catalog churn; and the held file goes through when accepted exactly.
    accepted = dg.materialize(
        sf.build_supplier_file_assets(make_registry(feed.sandbox.url)),
        resources=feed.resources(),
        run_config={"ops": {"supplier_files__delta": {"config": {"accept_sha256": sha}}}},
    )
    assert accepted.success and check_result(accepted).passed
    assert feed.warehouse.read(KEY).height == before - int(before * 0.3)


def test_a_supplier_that_publishes_a_checksum_may_shrink_its_file(feed: Feed) -> None:
    feed.metadata(feed.run(**SIDE))
    feed.sandbox.control(faults={"delta": {"drop_rows": 0.5}})
    assert feed.metadata(feed.run(**SIDE))["verified"] == "sha256"


def test_signatures_made_by_the_openssl_cli_verify(tmp_path: Path) -> None:
    """RSA and ECDSA keys, `openssl dgst -sha256 -sign`: what a supplier would run."""
    data = tmp_path / "prices.csv.enc"
    data.write_bytes(b"Salted__" + bytes(range(256)) * 50)
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    for algorithm in (
        ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    ):
        key, pub, sig = tmp_path / "key.pem", tmp_path / "pub.pem", tmp_path / "prices.sig"
        subprocess.run(["openssl", "genpkey", *algorithm, "-out", str(key)], check=True, capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True)
        subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(key), "-out", str(sig), str(data)], check=True
        )
        verify_signature(data, sha, sig.read_bytes(), pub.read_text(), source="test")
        verify_signature(data, sha, base64.b64encode(sig.read_bytes()), pub.read_text(), source="test")
        with pytest.raises(IntegrityError):
            verify_signature(data, "0" * 64, sig.read_bytes(), pub.read_text(), source="test")
    verify_checksum(sha, f"{sha}  prices.csv.enc\n".encode(), source="test")
    with pytest.raises(IntegrityError, match="does not hold a SHA-256"):
        verify_checksum(sha, b"<html>not found</html>", source="test")


# ---------------------------------------------------------------- quarantine output, state resource


def quarantine_events(result: dg.ExecuteInProcessResult) -> list[Any]:
    """The run's materializations of supplier_files_quarantine/delta."""
    return [e for e in result.get_asset_materialization_events() if e.asset_key.path == QUARANTINE_KEY]


def test_the_quarantine_is_the_asset_second_output_and_follows_the_cached_file(feed: Feed) -> None:
    feed.sandbox.control(faults={"delta": {"bad_rows": 3}})
    first = feed.run()
    [event] = quarantine_events(first)
    assert (
        event.materialization.metadata["rows"].value
        == feed.warehouse.read(sf.quarantine_key("delta")).height
        == 3
    )
    quarantine_file = Path(str(feed.warehouse.path(sf.quarantine_key("delta"))))
    [asset] = sf.build_supplier_file_assets(make_registry(feed.sandbox.url))
    declared = asset.specs_by_key[dg.AssetKey(QUARANTINE_KEY)].metadata["dagster/column_schema"]
    stored = pl.read_parquet_schema(quarantine_file)
    assert [(c.name, c.type) for c in declared.columns] == [(n, str(t)) for n, t in stored.items()]
    written = quarantine_file.read_bytes()
    # Unchanged file (304): the quarantine still describes the cache, so it is neither written nor reported.
    unchanged = feed.run()
    assert feed.metadata(unchanged)["unchanged"] is True and quarantine_events(unchanged) == []
    assert quarantine_file.read_bytes() == written
    # A refused file leaves both the cache and its quarantine as they were.
    feed.sandbox.control(faults={"delta": {"bad_rows": 100_000}})
    refused = feed.run()
    assert not refused.success and quarantine_events(refused) == []
    assert quarantine_file.read_bytes() == written
    # A newly accepted clean file replaces the rejects with an empty table.
    feed.sandbox.control(faults={"delta": None})
    httpx.post(f"{feed.sandbox.url}/cdn/delta/regenerate", timeout=10).raise_for_status()
    clean = feed.run()
    [event] = quarantine_events(clean)
    assert event.materialization.metadata["rows"].value == 0
    assert feed.warehouse.read(sf.quarantine_key("delta")).height == 0


def test_the_state_lives_in_the_state_folder_not_beside_the_cache(feed: Feed) -> None:
    meta = feed.metadata(feed.run())
    root = Path(str(feed.warehouse.root()))
    stored = json.loads((root / "_cdn_state" / "delta.json").read_text())
    assert stored["etag"] == meta["etag"] and stored["rows"] == meta["rows"]
    assert not (root / "supplier_files" / "delta.state.json").exists()
    assert feed.cdn_state.path("delta") == str(root / "_cdn_state" / "delta.json")


def test_a_deployment_state_at_the_old_location_keeps_the_conditional_get(feed: Feed) -> None:
    """A cache whose state is still `supplier_files/<id>.state.json` (written before `_cdn_state/`)."""
    first = feed.metadata(feed.run())
    root = Path(str(feed.warehouse.root()))
    new = root / "_cdn_state" / "delta.json"
    legacy = root / "supplier_files" / "delta.state.json"
    legacy.write_bytes(new.read_bytes())
    new.unlink()
    assert feed.state()["etag"] == first["etag"]  # read from the old location
    meta = feed.metadata(feed.run())
    # The old state's ETag and settings made the request conditional: a 304, nothing decrypted.
    assert meta["unchanged"] is True and meta["http_status"] == 304
    assert json.loads(new.read_text())["etag"] == first["etag"]  # saved at the new location from now on


def test_the_cache_can_be_refreshed_alone_but_not_the_quarantine(feed: Feed) -> None:
    assets = sf.build_supplier_file_assets(make_registry(feed.sandbox.url))
    cache_only = dg.materialize(assets, selection=[dg.AssetKey(KEY)], resources=feed.resources())
    assert [e.asset_key for e in cache_only.get_asset_materialization_events()] == [dg.AssetKey(KEY)]
    assert feed.warehouse.exists(KEY) and not feed.warehouse.exists(QUARANTINE_KEY)
    alone = dg.materialize(
        assets, selection=[dg.AssetKey(QUARANTINE_KEY)], resources=feed.resources(), raise_on_error=False
    )
    assert not alone.success
    assert "materialize it with supplier_files/delta" in feed.failure(alone)
