"""REST supplier clients: registry-driven adapters, auth, rate limits, retries and offer validation."""

from resources.suppliers.auth import ApiKeyAuth, OAuth2ClientCredentials, build_auth, clear_token_cache
from resources.suppliers.errors import RetryableError, SupplierError
from resources.suppliers.http import FetchStats, SupplierHttp, parse_retry_after
from resources.suppliers.parsing import RecordMapper, compile_path, parse_stock_text
from resources.suppliers.resource import REST_KINDS, FetchResult, SupplierClients, fetch_supplier_offers

__all__ = [
    "REST_KINDS",
    "ApiKeyAuth",
    "FetchResult",
    "FetchStats",
    "OAuth2ClientCredentials",
    "RecordMapper",
    "RetryableError",
    "SupplierClients",
    "SupplierError",
    "SupplierHttp",
    "build_auth",
    "clear_token_cache",
    "compile_path",
    "fetch_supplier_offers",
    "parse_retry_after",
    "parse_stock_text",
]
