"""Supplier authentication as httpx auth flows: API key header, OAuth2 client credentials, HTTP basic."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass

import httpx

from resources.config import AuthConfig
from resources.secrets import read_secret
from resources.suppliers.errors import RetryableError, SupplierError


def supplier_secret(name: str, *, supplier: str, environ: Mapping[str, str] | None = None) -> str:
    """The value of a secret env var; a missing one is an error naming the variable (never a value)."""
    value = read_secret(name, environ)
    if not value:
        raise SupplierError(
            f"supplier {supplier!r}: environment variable {name} is not set", supplier=supplier
        )
    return value


class ApiKeyAuth(httpx.Auth):
    """Sends an API key in a header (X-Api-Key by default)."""

    def __init__(self, header: str, key: str) -> None:
        self._header = header
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the key header to every request."""
        request.headers[self._header] = self._key
        yield request

    def __repr__(self) -> str:
        return f"ApiKeyAuth(header={self._header!r}, key=***)"


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float  # time.monotonic() seconds


# Tokens outlive one fetch (each fetch has its own event loop), so the cache is per process.
_TOKEN_CACHE: dict[tuple[str, str, str | None], _Token] = {}
_TOKEN_CACHE_LOCK = threading.Lock()


def clear_token_cache() -> None:
    """Forget every cached OAuth2 token (tests, or after rotating credentials)."""
    with _TOKEN_CACHE_LOCK:
        _TOKEN_CACHE.clear()


class OAuth2ClientCredentials(httpx.Auth):
    """OAuth2 client-credentials bearer auth: cached token, refreshed before expiry and once on a 401."""

    def __init__(
        self,
        *,
        supplier: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None,
        client: httpx.AsyncClient,
        on_token_request: Callable[[], None] = lambda: None,
    ) -> None:
        self._supplier = supplier
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._client = client
        self._on_token_request = on_token_request
        self._cache_key = (token_url, client_id, scope)
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"OAuth2ClientCredentials(token_url={self._token_url!r}, client_id=***, secret=***)"

    def _cached(self) -> _Token | None:
        with _TOKEN_CACHE_LOCK:
            token = _TOKEN_CACHE.get(self._cache_key)
        if token is not None and time.monotonic() < token.expires_at:
            return token
        return None

    def _forget(self, stale: str) -> None:
        with _TOKEN_CACHE_LOCK:
            current = _TOKEN_CACHE.get(self._cache_key)
            # Another request may already have replaced the token that got the 401.
            if current is not None and current.value == stale:
                del _TOKEN_CACHE[self._cache_key]

    async def token(self) -> str:
        """A valid access token: from the cache, or fetched once for all concurrent callers."""
        token = self._cached()
        if token is not None:
            return token.value
        async with self._lock:
            token = self._cached()
            if token is None:
                token = await self._fetch()
                with _TOKEN_CACHE_LOCK:
                    _TOKEN_CACHE[self._cache_key] = token
            return token.value

    async def _fetch(self) -> _Token:
        data = {"grant_type": "client_credentials"}
        if self._scope:
            data["scope"] = self._scope
        self._on_token_request()
        endpoint = f"POST {httpx.URL(self._token_url).path}"
        try:
            # Client authentication by HTTP basic, as RFC 6749 §2.3.1 recommends.
            response = await self._client.post(
                self._token_url, data=data, auth=httpx.BasicAuth(self._client_id, self._client_secret)
            )
        except httpx.TimeoutException as exc:
            raise RetryableError(f"{endpoint}: timeout") from exc
        except httpx.TransportError as exc:
            raise RetryableError(f"{endpoint}: {type(exc).__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableError(f"{endpoint}: HTTP {response.status_code}", status=response.status_code)
        if response.status_code != 200:
            raise SupplierError(
                f"supplier {self._supplier!r}: {endpoint} returned HTTP {response.status_code} "
                "(token request rejected; check the client id/secret env vars)",
                supplier=self._supplier,
                endpoint=endpoint,
                status=response.status_code,
            )
        try:
            payload = response.json()
            value = str(payload["access_token"])
            lifetime = float(payload.get("expires_in") or 3600)
        except (ValueError, KeyError, TypeError) as exc:
            raise RetryableError(f"{endpoint}: token response is not valid JSON with access_token") from exc
        # Refresh a little early so a token never expires between the check and the request.
        margin = min(30.0, lifetime * 0.1)
        return _Token(value=value, expires_at=time.monotonic() + max(0.0, lifetime - margin))

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Send with the cached token; on a 401 drop that token, fetch a new one and resend once."""
        token = await self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self._forget(token)
            token = await self.token()
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Supplier clients are async only."""
        raise RuntimeError("OAuth2ClientCredentials needs an httpx.AsyncClient")


def build_auth(
    auth: AuthConfig,
    *,
    supplier: str,
    base_url: str,
    client: httpx.AsyncClient,
    environ: Mapping[str, str] | None = None,
    on_token_request: Callable[[], None] = lambda: None,
) -> httpx.Auth | None:
    """The httpx auth for a registry auth section, secrets read from the environment now."""
    if auth.kind == "none":
        return None
    if auth.kind == "api_key":
        assert auth.key_env is not None
        return ApiKeyAuth(auth.header, supplier_secret(auth.key_env, supplier=supplier, environ=environ))
    if auth.kind == "basic":
        assert auth.username_env is not None and auth.password_env is not None
        return httpx.BasicAuth(
            supplier_secret(auth.username_env, supplier=supplier, environ=environ),
            supplier_secret(auth.password_env, supplier=supplier, environ=environ),
        )
    assert (
        auth.token_url is not None and auth.client_id_env is not None and auth.client_secret_env is not None
    )
    token_url = auth.token_url
    if not httpx.URL(token_url).is_absolute_url:
        token_url = base_url.rstrip("/") + "/" + token_url.lstrip("/")
    return OAuth2ClientCredentials(
        supplier=supplier,
        token_url=token_url,
        client_id=supplier_secret(auth.client_id_env, supplier=supplier, environ=environ),
        client_secret=supplier_secret(auth.client_secret_env, supplier=supplier, environ=environ),
        scope=auth.scope,
        client=client,
        on_token_request=on_token_request,
    )
