"""`supplier_files/<supplier>`: encrypted CDN price files, downloaded, decrypted and cached as Parquet.

One unpartitioned multi-asset per `cdn_file` supplier in the registry: the cache and, as its second
output, `supplier_files_quarantine/<supplier>` (the rows the cached file had rejected). A run does a
conditional GET; an unchanged file (304, or the same bytes) is not decrypted again. A new file is
decrypted, parsed, validated and written atomically; on any failure the previous Parquet stays and the
run fails with a `dagster.Failure` naming the cause. `supplier_offers/<supplier>` batch slices read the
cache through `read_cached_offers` (no network). State (ETag, Last-Modified, content hash, when the CDN
last confirmed the file) lives behind the `cdn_state` resource (`_cdn_state/<supplier>.json`).
"""

import hashlib
import time
from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetOut,
    AssetsDefinition,
    AssetSelection,
    Config,
    DataVersion,
    DefaultScheduleStatus,
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
    ScheduleDefinition,
    define_asset_job,
    multi_asset,
)
from pydantic import Field

from pricing_assets import OWNERS
from pricing_assets.logic.batching import in_batches
from resources.cdn_crypto import BadRowsError, CdnFeedError, CdnHttpError, ShrunkFileError
from resources.cdn_file import CdnFile, check_sku_shrink
from resources.cdn_parse import PriceFile, decrypt_price_file
from resources.cdn_state import LAYOUT_COLUMNS, CdnCacheState
from resources.config import ConfigError, Registry, SupplierEntry
from resources.schemas import OFFERS_SCHEMA, QUARANTINE_SCHEMA, UTC_TS, column_schema, empty_frame
from resources.service_config import ServiceConfigResource
from resources.warehouse import WarehouseTables

KEY_PREFIX = "supplier_files"
# Output names of the supplier file multi-asset.
CACHE_OUTPUT = "cache"
QUARANTINE_OUTPUT = "quarantine"
SCHEDULE_CRON = "*/30 * * * *"


def cache_key(supplier_id: str) -> list[str]:
    """Warehouse key path of a supplier's cached offers: supplier_files/<id>.parquet."""
    return [KEY_PREFIX, supplier_id]


def quarantine_key(supplier_id: str) -> list[str]:
    """Warehouse key path of the rows the last accepted file had rejected."""
    return ["supplier_files_quarantine", supplier_id]


def _laid_out_for(scan: pl.LazyFrame, catalog_batches: int) -> bool:
    """Whether a cached file carries batch columns computed for this many batches."""
    if not set(LAYOUT_COLUMNS) <= set(scan.collect_schema().names()):
        return False
    first = scan.select(pl.col("catalog_batches").first()).collect()
    return first.height == 1 and first.item() == catalog_batches


def check_quality(price_file: PriceFile, *, max_share: float) -> None:
    """Refuse a file with no valid rows, or with more than max_share of its rows quarantined."""
    good, bad = price_file.offers.height, price_file.quarantine.height
    if good == 0:
        raise BadRowsError(f"no valid rows ({bad} quarantined)")
    if bad / (good + bad) > max_share:
        reasons = price_file.quarantine.get_column("reason").value_counts(sort=True).head(3).rows()
        top = ", ".join(f"{reason} x{count}" for reason, count in reasons)
        raise BadRowsError(f"{bad} of {good + bad} rows failed validation (over {max_share:.0%}): {top}")


def cache_price_file(
    path: Path,
    entry: SupplierEntry,
    *,
    passphrase: bytes,
    warehouse: WarehouseTables,
    cdn_state: CdnCacheState,
    fetched_at: datetime,
    known_currencies: Collection[str],
    quarantine_max_share: float,
    catalog_batches: int,
    sha256: str | None = None,
    accept_sha256: str | None = None,
) -> PriceFile:
    """Decrypt, parse and validate a downloaded file, then publish it as the supplier's cache.

    A file the supplier publishes no checksum or signature for must keep the previous file's SKUs
    (up to `max_sku_shrink_share`), unless an operator accepted exactly this file (`accept_sha256`).
    The rejected rows come back in the result: the asset publishes them as its quarantine output.
    """
    assert entry.cdn is not None, "only cdn_file suppliers have files"
    with path.open("rb") as source:
        price_file = decrypt_price_file(
            source,
            entry.cdn,
            passphrase,
            supplier=entry.id,
            fetched_at=fetched_at,
            known_currencies=known_currencies,
        )
    check_quality(price_file, max_share=quarantine_max_share)
    if not entry.cdn.verified and (not accept_sha256 or accept_sha256 != sha256):
        previous = (
            warehouse.read(cache_key(entry.id)).get_column("sku")
            if warehouse.exists(cache_key(entry.id))
            else None
        )
        check_sku_shrink(previous, price_file.offers, max_share=entry.cdn.max_sku_shrink_share, sha256=sha256)
    cdn_state.publish(entry.id, price_file.offers, catalog_batches)
    return price_file


def read_cached_offers(
    warehouse: WarehouseTables,
    supplier_id: str,
    skus: Sequence[str] | pl.Series,
    *,
    batches: Sequence[str] | None = None,
    catalog_batches: int | None = None,
    staleness_ttl: timedelta | None = None,
    now: datetime | None = None,
    cdn_state: CdnCacheState | None = None,
) -> pl.DataFrame:
    """The cached offers for these SKUs (OFFERS_SCHEMA), no network; empty when nothing is cached.

    fetched_at is when the CDN last confirmed the file (a 304 counts), so offers age out only when
    the feed stops confirming them. With staleness_ttl, offers older than that are left out. With the
    run's `batches` (of `catalog_batches`), only their row groups are read when the cache is laid out
    for that many batches; the SKUs still decide which rows come back. The state is `cdn_state`'s,
    by default the one kept in this warehouse.
    """
    key = cache_key(supplier_id)
    path = warehouse.path(key)
    if not path.exists():
        return empty_frame(OFFERS_SCHEMA)
    # A Series is used as it is: a million SKUs through a Python list and back cost ~0.15 s a step.
    wanted = (skus if isinstance(skus, pl.Series) else pl.Series(list(skus), dtype=pl.String)).implode()
    if getattr(path, "protocol", "") in ("", "file", "local"):
        scan = pl.scan_parquet(str(path))
        if batches and catalog_batches and _laid_out_for(scan, catalog_batches):
            # A range filter is what the row groups' min/max statistics can skip on.
            scan = scan.filter(in_batches(batches))
        offers = scan.filter(pl.col("sku").is_in(wanted)).collect()
    else:
        offers = warehouse.read(key).filter(pl.col("sku").is_in(wanted))
    state = (cdn_state or CdnCacheState(base_dir=warehouse.base_dir)).load(supplier_id)
    if state.get("confirmed_at"):
        confirmed = datetime.fromisoformat(state["confirmed_at"])
        # max(): a refresh writes the Parquet before the state, so the state may be the older one.
        offers = offers.with_columns(
            fetched_at=pl.max_horizontal(pl.col("fetched_at"), pl.lit(confirmed, dtype=UTC_TS))
        )
    if staleness_ttl is not None:
        cutoff = (now or datetime.now(UTC)) - staleness_ttl
        offers = offers.filter(pl.col("fetched_at") >= cutoff)
    return offers.select([pl.col(name).cast(dtype) for name, dtype in OFFERS_SCHEMA.items()])


def _settings_fingerprint(entry: SupplierEntry, url: str, catalog_batches: int) -> str:
    assert entry.cdn is not None
    # The batch count is in it because the cache is laid out by batch: a new count re-reads the file
    # once and lays it out again (a cache from before the layout is migrated the same way).
    settings = f"{url}\n{entry.cdn.model_dump_json()}\nbatches={catalog_batches}"
    return hashlib.sha256(settings.encode()).hexdigest()[:16]


def _cache_metadata(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "previous_cache_rows": state.get("rows"),
        "previous_cache_fetched_at": state.get("fetched_at"),
        "previous_cache_confirmed_at": state.get("confirmed_at"),
    }


def _refresh(
    context: AssetExecutionContext,
    entry: SupplierEntry,
    known_currencies: Collection[str],
    catalog_batches: int,
    warehouse: WarehouseTables,
    cdn_state: CdnCacheState,
    service_config: ServiceConfigResource,
    cdn_files: CdnFile,
    accept_sha256: str | None = None,
) -> Iterator[MaterializeResult | Output]:
    """The cache's materialization and, for a newly accepted file, its quarantine output."""
    config = service_config.load()
    key = cache_key(entry.id)
    if not config.enabled(entry.id):
        context.log.info(f"supplier {entry.id} is disabled in SERVICE_CONFIG: file not fetched")
        # Nothing fetched, nothing to check; a check output is yielded all the same.
        skipped = integrity_check(entry, passed=True, note="skipped: supplier disabled")
        yield MaterializeResult(asset_key=key, metadata={"skipped": "disabled"}, check_results=[skipped])
        return
    state = cdn_state.load(entry.id)
    has_cache = warehouse.exists(key)
    now = datetime.now(UTC)
    started = time.perf_counter()
    try:
        passphrase = cdn_files.passphrase(entry)
        client, url = cdn_files.client(entry), cdn_files.url(entry)
        # Conditional only with a cache made from this URL and these settings: a registry change
        # (new KDF, header, ...) must re-read the file even if the CDN has not changed it.
        fingerprint = _settings_fingerprint(entry, url, catalog_batches)
        conditional = has_cache and state.get("settings") == fingerprint
        etag = state.get("etag") if conditional else None
        last_modified = state.get("last_modified") if conditional else None
        with client.download(url, etag=etag, last_modified=last_modified) as download:
            if download.unchanged and not conditional:
                raise CdnHttpError("HTTP 304 to a request without validators: nothing to keep")
            same_bytes = (
                conditional and download.sha256 is not None and download.sha256 == state.get("sha256")
            )
            if download.unchanged or same_bytes:
                state.update(
                    confirmed_at=now.isoformat(),
                    etag=download.etag or state.get("etag"),
                    last_modified=download.last_modified or state.get("last_modified"),
                    last_error=None,
                )
                cdn_state.save(entry.id, state)
                context.log.info(f"{entry.id}: file unchanged (HTTP {download.status_code}), not decrypted")
                # The quarantine is not written: it still describes the cached file.
                yield MaterializeResult(
                    asset_key=key,
                    metadata={
                        "unchanged": True,
                        "http_status": download.status_code,
                        "rows": state.get("rows"),
                        "etag": str(state.get("etag")),
                        "fetched_at": str(state.get("fetched_at")),
                        "confirmed_at": now.isoformat(),
                    },
                    data_version=DataVersion(state["sha256"]) if state.get("sha256") else None,
                    check_results=[
                        integrity_check(entry, passed=True, note="unchanged: the cached file stays")
                    ],
                )
                return
            assert download.path is not None
            verified = cdn_files.verify(entry, download)  # before anything is decrypted or cached
            price_file = cache_price_file(
                download.path,
                entry,
                passphrase=passphrase,
                warehouse=warehouse,
                cdn_state=cdn_state,
                fetched_at=now,
                known_currencies=known_currencies,
                quarantine_max_share=float(config.quarantine_max_share),
                catalog_batches=catalog_batches,
                sha256=download.sha256,
                accept_sha256=accept_sha256,
            )
    except (CdnFeedError, ConfigError) as exc:
        cause = exc.cause if isinstance(exc, CdnFeedError) else "config"
        state["last_error"] = {"cause": cause, "message": str(exc), "at": now.isoformat()}
        cdn_state.save(entry.id, state)
        kept = "previous cache kept" if has_cache else "no previous cache"
        held = {"held_sha256": exc.sha256} if isinstance(exc, ShrunkFileError) and exc.sha256 else {}
        raise Failure(
            description=f"supplier_files/{entry.id}: {exc} ({kept})",
            metadata={"cause": cause, "previous_cache": has_cache, **held, **_cache_metadata(state)},
            # Only a network problem can go away by itself; a bad file stays bad until replaced.
            allow_retries=cause == "http_error",
        ) from None
    state = {
        "settings": fingerprint,
        "etag": download.etag,
        "last_modified": download.last_modified,
        "sha256": download.sha256,
        "fetched_at": now.isoformat(),
        "confirmed_at": now.isoformat(),
        "rows": price_file.offers.height,
        "quarantined": price_file.quarantine.height,
        "last_error": None,
    }
    cdn_state.save(entry.id, state)
    reasons = MetadataValue.json(
        dict(price_file.quarantine.get_column("reason").value_counts(sort=True).head(10).rows())
    )
    yield MaterializeResult(
        asset_key=key,
        metadata={
            "unchanged": False,
            "rows": price_file.offers.height,
            "quarantined": price_file.quarantine.height,
            "quarantine_reasons": reasons,
            "bytes": download.size,
            "plaintext_bytes": price_file.plaintext_bytes,
            "base64": price_file.base64,
            "etag": str(download.etag),
            "last_modified": str(download.last_modified),
            "attempts": download.attempts,
            "seconds": round(time.perf_counter() - started, 3),
            "path": MetadataValue.path(str(warehouse.path(key))),
            "verified": ", ".join(verified) or "no checksum or signature published",
        },
        data_version=DataVersion(download.sha256 or now.isoformat()),
        check_results=[integrity_check(entry, passed=True, verified=verified, accepted=bool(accept_sha256))],
    )
    # The accepted file's rejected rows (the IO manager writes them; an empty frame replaces old rejects).
    yield Output(
        price_file.quarantine,
        output_name=QUARANTINE_OUTPUT,
        # No data_version here: Output's is a beta parameter that warns in every run's log; the file's
        # sha256 (metadata) and the cache's own data version already identify what was quarantined.
        metadata={"reasons": reasons, "sha256": str(download.sha256)},
    )


INTEGRITY_CHECK = "file_integrity"
_INTEGRITY_CAUSES = ("integrity", "held_shrunk")


def integrity_check(
    entry: SupplierEntry,
    *,
    passed: bool,
    verified: Sequence[str] = (),
    accepted: bool = False,
    failure: Failure | None = None,
    note: str | None = None,
) -> AssetCheckResult:
    """The file_integrity check: the cached file matches the supplier's checksum/signature, or (without
    them) kept the previous file's SKUs; failed when a file was refused or held for either reason."""
    metadata: dict[str, Any] = {"verified": ", ".join(verified) or "none published"}
    if accepted:
        metadata["accepted_by_operator"] = True
    if note:
        metadata["note"] = note
    if failure is not None:
        metadata |= {
            name: value for name, value in failure.metadata.items() if name in ("cause", "held_sha256")
        }
    return AssetCheckResult(
        check_name=INTEGRITY_CHECK,
        asset_key=AssetKey(cache_key(entry.id)),
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        description=None if failure is None else failure.description,
        metadata=metadata,
    )


class SupplierFileConfig(Config):
    """Run config of a supplier file refresh."""

    accept_sha256: str = Field(
        default="",
        description="Accept the held file with this SHA-256 (from the failed file_integrity check) although "
        "it lost more SKUs than max_sku_shrink_share",
    )


def _build_one(
    entry: SupplierEntry, known_currencies: Collection[str], catalog_batches: int
) -> AssetsDefinition:
    assert entry.cdn is not None
    key = AssetKey(cache_key(entry.id))

    @multi_asset(
        # The op keeps the name the single asset had (step keys, run history, failure lookups).
        name=key.to_python_identifier(),
        outs={
            CACHE_OUTPUT: AssetOut(
                key=key,
                group_name="supplier_feeds",
                owners=OWNERS,
                kinds={"polars", "parquet", "http"},
                description=(
                    f"Supplier {entry.id}'s encrypted CDN price file ({entry.cdn.kdf}/{entry.cdn.digest}), "
                    "decrypted, validated and cached as Parquet."
                ),
                # The cache holds the whole file's offers in the offers contract, laid out by catalog batch.
                metadata={
                    "supplier": entry.id,
                    "cdn_path": entry.cdn.path,
                    **column_schema({**OFFERS_SCHEMA, **LAYOUT_COLUMNS}),
                },
            ),
            QUARANTINE_OUTPUT: AssetOut(
                key=AssetKey(quarantine_key(entry.id)),
                group_name="supplier_feeds",
                owners=OWNERS,
                kinds={"polars", "parquet", "http"},
                description=f"Rows of supplier {entry.id}'s cached CDN file that failed validation, one "
                "reason each (rewritten with each newly accepted file).",
                # Not written when the file is unchanged, refused or not fetched: it describes the cache.
                is_required=False,
                metadata={"supplier": entry.id, **column_schema(QUARANTINE_SCHEMA)},
            ),
        },
        pool=entry.pool,
        check_specs=[
            AssetCheckSpec(
                INTEGRITY_CHECK,
                asset=key,
                description="The file matches the supplier's checksum or signature; without them, it kept "
                "the previous file's SKUs (else it is held, not cached).",
            )
        ],
        # The cache can be refreshed alone (runs and launches that name only `supplier_files/<id>`);
        # the quarantine cannot: it is the rejects of the file being cached, so it needs the cache.
        can_subset=True,
    )
    def supplier_file(
        context: AssetExecutionContext,
        config: SupplierFileConfig,
        warehouse: WarehouseTables,
        cdn_state: CdnCacheState,
        service_config: ServiceConfigResource,
        cdn_files: CdnFile,
    ) -> Iterator[Any]:
        """The supplier's decrypted price file as validated offers cached as Parquet, and its rejects."""
        accept = config.accept_sha256.strip() or None
        selected = context.selected_asset_keys
        if key not in selected:
            raise Failure(
                description=f"supplier_files_quarantine/{entry.id} holds the rejects of the file being "
                f"cached: materialize it with supplier_files/{entry.id}"
            )
        with_quarantine = AssetKey(quarantine_key(entry.id)) in selected
        try:
            for event in _refresh(
                context,
                entry,
                known_currencies,
                catalog_batches,
                warehouse,
                cdn_state,
                service_config,
                cdn_files,
                accept,
            ):
                if (
                    isinstance(event, Output)
                    and event.output_name == QUARANTINE_OUTPUT
                    and not with_quarantine
                ):
                    context.log.warning(
                        f"supplier_files_quarantine/{entry.id} not selected: the new file's rejects are "
                        "not written (select both to keep them in step with the cache)"
                    )
                    continue
                yield event
        except Failure as failure:
            cause = failure.metadata.get("cause")
            if cause is not None and cause.value in _INTEGRITY_CAUSES:
                yield integrity_check(entry, passed=False, failure=failure)
            raise

    return supplier_file


def build_supplier_file_assets(registry: Registry) -> list[AssetsDefinition]:
    """One `supplier_files/<id>` + `supplier_files_quarantine/<id>` multi-asset per `cdn_file` supplier."""
    known = set(registry.fx_rates())
    return [
        _build_one(entry, known, registry.catalog_batches)
        for entry in registry.suppliers
        if entry.kind == "cdn_file"
    ]


def build_supplier_file_schedule(
    assets: Sequence[AssetsDefinition],
    *,
    default_status: DefaultScheduleStatus = DefaultScheduleStatus.RUNNING,
) -> ScheduleDefinition:
    """Every 30 minutes (UTC), refresh all supplier files; unchanged files cost one conditional GET."""
    job = define_asset_job("supplier_files_job", selection=AssetSelection.assets(*assets))
    return ScheduleDefinition(
        name="supplier_files_schedule",
        job=job,
        cron_schedule=SCHEDULE_CRON,
        execution_timezone="UTC",
        default_status=default_status,
    )
