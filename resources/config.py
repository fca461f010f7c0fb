"""Loaders for the supplier registry (YAML) and the runtime SERVICE_CONFIG (JSON)."""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from resources.secrets import read_secret

DEFAULT_REGISTRY = Path(__file__).resolve().parent.parent / "pricing_assets" / "suppliers.yaml"
_ENV_REF = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::-(?P<default>[^}]*))?\}")


class ConfigError(ValueError):
    """A configuration file or variable is invalid; the message names the source and the key."""


class _Strict(BaseModel):
    # strict: a bool or a string is never coerced into a number (`true` is not 1, "50" is not 50).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _exact_decimal(value: Any) -> Any:
    """A decimal from a string, an integer or an exact decimal; never from a bool or a binary float."""
    if isinstance(value, bool):
        raise ValueError("expected a decimal number, got a boolean")
    if isinstance(value, float):
        raise ValueError('expected a decimal as a string (e.g. "0.92"), got a binary float')
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
        value = parsed
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError("expected a finite decimal number")
    return value


_LAX_TIMEDELTA: TypeAdapter[timedelta] = TypeAdapter(timedelta)


def _duration(value: Any) -> Any:
    """A duration from seconds (an integer or decimal number) or an ISO 8601 string such as "PT30M"."""
    if isinstance(value, bool):
        raise ValueError("expected seconds or an ISO 8601 duration, got a boolean")
    if isinstance(value, int | Decimal):
        return timedelta(seconds=float(value))
    if isinstance(value, str):
        if not value.strip().lstrip("-").upper().startswith("P"):
            raise ValueError(
                f'{value!r} is not an ISO 8601 duration (e.g. "PT30M"); give seconds as a number'
            )
        try:
            return _LAX_TIMEDELTA.validate_python(value.strip())
        except ValidationError:
            raise ValueError(f"{value!r} is not an ISO 8601 duration") from None
    return value


ExactDecimal = Annotated[Decimal, BeforeValidator(_exact_decimal)]
Duration = Annotated[timedelta, BeforeValidator(_duration)]
# Markup percents: -100 % (a discount down to zero; the margin floor still applies) up to 1000 %.
Percent = Annotated[Decimal, BeforeValidator(_exact_decimal), Field(ge=-100, le=1000)]
Share = Annotated[Decimal, BeforeValidator(_exact_decimal), Field(ge=0, le=1)]


# ---------------------------------------------------------------- supplier registry


class AuthConfig(_Strict):
    """How a supplier authenticates requests; secrets are named by env var, never inlined."""

    kind: Literal["none", "api_key", "oauth2_client_credentials", "basic"] = "none"
    header: str = "X-Api-Key"
    key_env: str | None = None
    token_url: str | None = None  # relative to base_url unless absolute
    client_id_env: str | None = None
    client_secret_env: str | None = None
    scope: str | None = None
    username_env: str | None = None
    password_env: str | None = None

    @model_validator(mode="after")
    def _needs_secrets(self) -> AuthConfig:
        required = {
            "api_key": ["key_env"],
            "oauth2_client_credentials": ["token_url", "client_id_env", "client_secret_env"],
            "basic": ["username_env", "password_env"],
        }.get(self.kind, [])
        missing = [name for name in required if getattr(self, name) is None]
        if missing:
            raise ValueError(f"auth kind {self.kind!r} needs {', '.join(missing)}")
        return self

    def secret_env_names(self) -> list[str]:
        """The environment variables this auth reads."""
        names = [
            self.key_env,
            self.client_id_env,
            self.client_secret_env,
            self.username_env,
            self.password_env,
        ]
        return [name for name in names if name]


class RateLimitConfig(_Strict):
    """Requests per second with a burst allowance, and parallel requests in flight."""

    requests_per_second: float = Field(default=10.0, gt=0)
    burst: int = Field(default=10, ge=1)
    max_in_flight: int = Field(default=8, ge=1)
    # The client paces at requests_per_second x (1 - margin): room for scheduling jitter (a client
    # pacing at exactly the limit drew 429s, docs/suppliers.md).
    margin: float = Field(default=0.02, ge=0, le=0.5)


class RetryConfig(_Strict):
    """Bounded retries with exponential backoff and jitter."""

    max_attempts: int = Field(default=5, ge=1, le=20)
    backoff_initial_seconds: float = Field(default=0.2, ge=0)
    backoff_max_seconds: float = Field(default=10.0, ge=0)
    max_retry_after_seconds: float = Field(default=60.0, ge=0)


class CdnFileConfig(_Strict):
    """Where an encrypted price file lives and how OpenSSL encrypted it (docs/architecture.md §8)."""

    path: str
    passphrase_env: str
    kdf: Literal["pbkdf2", "evp_bytestokey"] = "pbkdf2"
    digest: Literal["sha256", "sha512", "sha1", "md5"] = "sha256"
    iterations: int = Field(default=10000, ge=1)
    base64: Literal["auto", "yes", "no"] = "auto"
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    expected_header: list[str] = Field(default_factory=lambda: ["sku", "price", "currency", "stock"])
    delimiter: str = ","
    # Integrity, where the supplier offers it (docs/cdn_feed.md): paths beside `path`, fetched with the
    # same base URL and auth, verified before the file is cached.
    checksum_path: str | None = None  # `sha256sum` output: "<64 hex>  <name>" (or just the hex)
    signature_path: str | None = None  # detached signature of the file's bytes (raw or base64)
    signature_public_key: str | None = None  # PEM: RSA/ECDSA (SHA-256, `openssl dgst -sign`) or Ed25519
    # Without a checksum or signature: a file that loses more than this share of the previous file's
    # SKUs is held (not cached) with a failed check.
    max_sku_shrink_share: Share = Decimal("0.2")

    @model_validator(mode="after")
    def _signature_needs_key(self) -> CdnFileConfig:
        if self.signature_path and not self.signature_public_key:
            raise ValueError("signature_path needs signature_public_key (a PEM public key)")
        return self

    @property
    def verified(self) -> bool:
        """Whether the supplier publishes a checksum or a signature the file is checked against."""
        return bool(self.checksum_path or self.signature_path)


class SupplierEntry(_Strict):
    """One supplier in the registry: adapter kind, endpoint, auth, request shape and mapping."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    kind: Literal["rest_batch", "rest_paginated", "per_sku_post", "cdn_file"]
    base_url: str
    priority: int = 100
    currency: str | None = None  # default currency when the payload has none
    auth: AuthConfig = AuthConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    retry: RetryConfig = RetryConfig()
    timeout_seconds: float = Field(default=10.0, gt=0)
    # Kind-specific request shape (paths, params, batch size, pagination style); see docs/suppliers.md.
    request: dict[str, Any] = Field(default_factory=dict)
    # Offer field -> JSON path in one record of the response (dotted, with [n] indexes).
    fields: dict[str, str] = Field(default_factory=dict)
    # Value parsers per offer field, e.g. price: minor_units, stock: stock_text.
    parsers: dict[str, str] = Field(default_factory=dict)
    sku_map: dict[str, str] = Field(default_factory=dict)  # SKU -> supplier's id (ASIN)
    cdn: CdnFileConfig | None = None

    @model_validator(mode="after")
    def _kind_shape(self) -> SupplierEntry:
        if self.kind == "cdn_file" and self.cdn is None:
            raise ValueError("kind 'cdn_file' needs a 'cdn' section")
        return self

    @property
    def pool(self) -> str:
        """The Dagster concurrency pool that bounds this supplier across runs."""
        return f"supplier_{self.id}"

    def resolved_base_url(self, environ: dict[str, str] | None = None) -> str:
        """The base URL with ${VAR} / ${VAR:-default} references expanded from the environment."""
        return expand_env(self.base_url, environ, where=f"supplier {self.id!r} base_url")


class Registry(_Strict):
    """The supplier registry plus the store-wide settings the pricing location needs."""

    store_currency: str = "EUR"
    catalog_batches: int = Field(default=16, ge=1, le=1000)
    fx: dict[str, Annotated[ExactDecimal, Field(gt=0)]] = Field(default_factory=dict)  # 1 key = value store
    suppliers: list[SupplierEntry]
    source: str = "<memory>"

    @field_validator("suppliers")
    @classmethod
    def _unique_ids(cls, suppliers: list[SupplierEntry]) -> list[SupplierEntry]:
        seen: set[str] = set()
        for entry in suppliers:
            if entry.id in seen:
                raise ValueError(f"duplicate supplier id {entry.id!r}")
            seen.add(entry.id)
        return suppliers

    @cached_property
    def by_id(self) -> dict[str, SupplierEntry]:
        """Suppliers keyed by id."""
        return {entry.id: entry for entry in self.suppliers}

    @property
    def order(self) -> list[str]:
        """Supplier ids in tie-break order: priority, then registry position."""
        indexed = sorted(enumerate(self.suppliers), key=lambda item: (item[1].priority, item[0]))
        return [entry.id for _, entry in indexed]

    def fx_rates(self) -> dict[str, Decimal]:
        """FX table including the store currency at rate 1."""
        return {self.store_currency: Decimal(1), **self.fx}

    def check_secrets(self, environ: dict[str, str] | None = None) -> None:
        """Raise ConfigError naming every secret env var a supplier needs but is not set."""
        env = os.environ if environ is None else environ
        missing = []
        for entry in self.suppliers:
            names = entry.auth.secret_env_names()
            if entry.cdn is not None:
                names.append(entry.cdn.passphrase_env)
            missing += [f"{name} (supplier {entry.id!r})" for name in names if not read_secret(name, env)]
        if missing:
            raise ConfigError(f"{self.source}: missing secret environment variables: {', '.join(missing)}")


def expand_env(value: str, environ: dict[str, str] | None = None, *, where: str = "value") -> str:
    """Expand ${VAR} and ${VAR:-default}; an unset variable without default is a ConfigError."""
    env = os.environ if environ is None else environ

    def _sub(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set")

    return _ENV_REF.sub(_sub, value)


def _format_errors(source: str, error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        # Annotated validators add a "function-before[...]" step to the location: not a key.
        loc = ".".join(str(piece) for piece in item["loc"] if not str(piece).startswith("function-"))
        parts.append(f"key '{loc}': {item['msg'].removeprefix('Value error, ')}")
    return f"{source}: " + "; ".join(parts)


class _Pairs(list[tuple[str, Any]]):
    """A JSON object's (key, value) pairs in document order, before duplicates are ruled on."""


def _without_duplicates(value: Any, source: str, path: str = "") -> Any:
    """The parsed JSON with objects as dicts; a key given twice in one object is a ConfigError."""
    if isinstance(value, _Pairs):
        result: dict[str, Any] = {}
        for key, item in value:
            where = f"{path}.{key}" if path else key
            if key in result:
                raise ConfigError(f"{source}: key '{where}': given more than once")
            result[key] = _without_duplicates(item, source, where)
        return result
    if isinstance(value, list):
        return [_without_duplicates(item, source, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


def parse_json_strict(text: str, source: str) -> Any:
    """JSON with duplicate keys rejected and fractional numbers read as exact Decimals."""
    try:
        raw = json.loads(text, object_pairs_hook=_Pairs, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    return _without_duplicates(raw, source)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """The mapping, after checking no key occurs twice in it."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given more than once (line {line})", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_registry(path: str | Path | None = None) -> Registry:
    """Load and validate the supplier registry; errors name the file and the key."""
    file = Path(path or os.environ.get("SUPPLIER_REGISTRY") or DEFAULT_REGISTRY)
    try:
        raw = yaml.load(file.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: supplier registry not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping with a 'suppliers' list")
    try:
        return Registry.model_validate({**raw, "source": str(file)})
    except ValidationError as exc:
        raise ConfigError(_format_errors(str(file), exc)) from exc


# ---------------------------------------------------------------- runtime SERVICE_CONFIG


class SupplierSwitch(_Strict):
    """Per-supplier runtime switch."""

    enabled: bool = True


class RoundingConfig(_Strict):
    """How a marked-up price is rounded: none, a .99 ending, or the nearest step."""

    mode: Literal["none", "ending_99", "step"] = "none"
    step: ExactDecimal = Field(default=Decimal("0.05"), gt=0, le=1000)


class MarkupConfig(_Strict):
    """Markup rules: global percent, per-category and per-SKU overrides, floor margin."""

    percent: Percent = Decimal("15")
    categories: dict[str, Percent] = Field(default_factory=dict)
    skus: dict[str, Percent] = Field(default_factory=dict)
    rounding: RoundingConfig = RoundingConfig()
    # A fraction of cost: 0.05 = 5 %; at most 10 (1000 %).
    min_margin: ExactDecimal = Field(default=Decimal("0.05"), ge=0, le=10)


class GuardConfig(_Strict):
    """Thresholds above which price changes (and availability flips) are held for approval."""

    max_change_pct: ExactDecimal = Field(default=Decimal("30"), gt=0, le=1000)
    max_batch_change_share: ExactDecimal = Field(default=Decimal("0.5"), gt=0, le=1)
    # More than this share of a batch's SKUs turning unavailable at once is held (a bad value or a
    # bad supplier must not empty the storefront).
    max_batch_unavailable_share: Share = Decimal("0.25")


class ServiceConfig(_Strict):
    """Runtime switches re-read at every run: no redeploy or reload needed to flip them."""

    dry_run: bool = False
    suppliers: dict[str, SupplierSwitch] = Field(default_factory=dict)
    markup: MarkupConfig = MarkupConfig()
    guard: GuardConfig = GuardConfig()
    staleness_ttl: Duration = timedelta(minutes=30)
    sweep_minutes: int = Field(default=5, ge=1, le=1440)
    sweep_batches_per_run: int = Field(default=16, ge=1)
    push_batch_size: int = Field(default=500, ge=1, le=10_000)
    quarantine_max_share: Share = Decimal("0.2")
    source: str = "<defaults>"

    @field_validator("staleness_ttl")
    @classmethod
    def _positive_ttl(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be more than 0 seconds (0 or less would make every offer stale)")
        return value

    def enabled(self, supplier_id: str) -> bool:
        """Whether a supplier is switched on (suppliers not listed are on)."""
        switch = self.suppliers.get(supplier_id)
        return switch.enabled if switch else True

    def check_suppliers(self, known: list[str]) -> None:
        """Raise ConfigError if the config switches a supplier the registry does not have."""
        unknown = sorted(set(self.suppliers) - set(known))
        if unknown:
            raise ConfigError(
                f"{self.source}: key 'suppliers.{unknown[0]}': unknown supplier "
                f"(registry has: {', '.join(known)})"
            )


def load_service_config(
    environ: dict[str, str] | None = None, *, known_suppliers: list[str] | None = None
) -> ServiceConfig:
    """Read SERVICE_CONFIG (JSON) from the env var or the file SERVICE_CONFIG_FILE names.

    With `known_suppliers` (the registry's ids), a switch for any other supplier is rejected here,
    when the config is read, before anything is fetched.
    """
    env = os.environ if environ is None else environ
    if env.get("SERVICE_CONFIG"):
        source, text = "SERVICE_CONFIG (environment variable)", env["SERVICE_CONFIG"]
    elif env.get("SERVICE_CONFIG_FILE"):
        source = f"SERVICE_CONFIG_FILE {env['SERVICE_CONFIG_FILE']}"
        try:
            text = Path(env["SERVICE_CONFIG_FILE"]).read_text()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from exc
    else:
        return ServiceConfig()
    raw = parse_json_strict(text, source)
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    try:
        config = ServiceConfig.model_validate({**raw, "source": source})
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from exc
    if known_suppliers is not None:
        config.check_suppliers(known_suppliers)
    return config
