"""Sandbox Shopify: an Admin GraphQL endpoint for `productVariantsBulkUpdate` with a cost bucket.

What it reproduces of Shopify (docs/storefront.md, "Sandbox fidelity"):
- `POST /admin/api/<version>/graphql.json`, token in `X-Shopify-Access-Token` (401 otherwise),
  versions `YYYY-01|04|07|10` or `unstable` (404 otherwise).
- A real GraphQL schema (graphql-core) for the subset we use: unknown fields or wrong variable types
  get GraphQL validation errors, as Shopify does.
- `productVariantsBulkUpdate(productId, variants, allowPartialUpdates)`: userErrors with
  `field: ["variants", "<index>", ...]` and Shopify's codes (PRODUCT_DOES_NOT_EXIST,
  PRODUCT_VARIANT_DOES_NOT_EXIST, MUST_BE_FOR_THIS_PRODUCT, GREATER_THAN_OR_EQUAL_TO, INVALID_INPUT);
  without allowPartialUpdates one bad variant stops the whole product.
- Cost: the leaky bucket (default 2000 points, 100 restored per second), 10 points per mutation
  field, 1 per query field; `extensions.cost` with requestedQueryCost, actualQueryCost and
  throttleStatus on every answer; an empty bucket answers HTTP 200 with a `THROTTLED` error and
  changes nothing; a query costing more than the bucket holds gets `MAX_COST_EXCEEDED`.

Faults (world.faults["shopify"]): `bucket_max`, `restore_rate` (a change refills the bucket),
`throttle_next` (the next N requests answer THROTTLED), `reject_skus` (variants of these SKUs get an
INVALID_INPUT userError), `status` (answer every request with this HTTP status), `fail_next` (the next N
requests get 503), `lose_response_next` (apply, then answer 502), `internal_error_next` (the next N
requests answer an INTERNAL_SERVER_ERROR GraphQL error without applying), `variants_empty_page_at`
(that page of the `productVariants` listing answers no nodes, pagination goes on), `wrong_count`
(`productVariantsCount` is off by this many).

Reads: `productVariants(first, after)` (a cursor connection in catalog order, `first` at most 250,
costing 2 + first like Shopify's connections) with each variant's `sku`, `price`, `inventoryPolicy`
and `metafield(namespace, key)`, and `productVariantsCount { count precision }`. A variant never
updated shows price "0.00", DENY and no metafield, as a freshly imported product would.
"""

from __future__ import annotations

import base64
import os
import re
import time
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from graphql import (
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    build_schema,
    execute_sync,
    parse,
    validate,
)
from graphql.language import DocumentNode, FieldNode, VariableNode
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.world import World

DEFAULT_TOKEN = "sandbox-shopify-token"
DEFAULT_BUCKET_MAX = 2000.0
DEFAULT_RESTORE_RATE = 100.0
MUTATION_COST = 10
_VERSION = re.compile(r"^(\d{4}-(01|04|07|10)|unstable)$")

SDL = """
scalar Money

enum ProductVariantInventoryPolicy { DENY CONTINUE }

enum ProductVariantsBulkUpdateUserErrorCode {
  PRODUCT_DOES_NOT_EXIST
  PRODUCT_VARIANT_DOES_NOT_EXIST
  MUST_BE_FOR_THIS_PRODUCT
  GREATER_THAN_OR_EQUAL_TO
  INVALID_INPUT
}

input MetafieldInput { namespace: String key: String type: String value: String }

input ProductVariantsBulkInput {
  id: ID
  price: Money
  compareAtPrice: Money
  inventoryPolicy: ProductVariantInventoryPolicy
  metafields: [MetafieldInput!]
}

type Product { id: ID! }

type Metafield { namespace: String! key: String! value: String! }

type ProductVariant {
  id: ID!
  sku: String
  price: Money
  inventoryPolicy: ProductVariantInventoryPolicy!
  product: Product!
  metafield(namespace: String!, key: String!): Metafield
}

type PageInfo { hasNextPage: Boolean! endCursor: String }

type ProductVariantEdge { cursor: String! node: ProductVariant! }

type ProductVariantConnection {
  nodes: [ProductVariant!]!
  edges: [ProductVariantEdge!]!
  pageInfo: PageInfo!
}

enum CountPrecision { EXACT AT_LEAST }

type Count { count: Int! precision: CountPrecision! }

type ProductVariantsBulkUpdateUserError {
  field: [String!]
  message: String!
  code: ProductVariantsBulkUpdateUserErrorCode
}

type ProductVariantsBulkUpdatePayload {
  product: Product
  productVariants: [ProductVariant!]
  userErrors: [ProductVariantsBulkUpdateUserError!]!
}

type Shop { name: String! }

type Query {
  shop: Shop!
  productVariant(id: ID!): ProductVariant
  productVariants(first: Int, after: String): ProductVariantConnection!
  productVariantsCount: Count
}

type Mutation {
  productVariantsBulkUpdate(
    productId: ID!
    variants: [ProductVariantsBulkInput!]!
    allowPartialUpdates: Boolean = false
  ): ProductVariantsBulkUpdatePayload
}
"""


@cache
def schema() -> GraphQLSchema:
    """The Admin API subset the sandbox serves."""
    return build_schema(SDL)


MAX_PAGE = 250


def requested_cost(document: DocumentNode, variables: dict[str, Any] | None = None) -> int:
    """Shopify-style requested cost: 10 per top-level mutation field, 1 per top-level query field,
    and 2 + first for a `productVariants` connection."""
    cost = 0
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        per_field = MUTATION_COST if definition.operation == OperationType.MUTATION else 1
        for selection in definition.selection_set.selections:
            if not isinstance(selection, FieldNode):
                continue
            if selection.name.value == "productVariants":
                cost += 2 + _first_argument(selection, variables or {})
            else:
                cost += per_field
    return cost


def _first_argument(field: FieldNode, variables: dict[str, Any]) -> int:
    """The `first` argument of a connection field, literal or variable (default 1)."""
    for argument in field.arguments:
        if argument.name.value != "first":
            continue
        node = argument.value
        value: Any = (
            variables.get(node.name.value) if isinstance(node, VariableNode) else getattr(node, "value", None)
        )
        try:
            return max(1, int(value))
        except (TypeError, ValueError):
            return 1
    return 1


def _mutation_fields(document: DocumentNode) -> int:
    """How many top-level mutation fields a document has."""
    return sum(
        1
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode) and definition.operation == OperationType.MUTATION
        for selection in definition.selection_set.selections
        if isinstance(selection, FieldNode)
    )


def _cursor(index: int) -> str:
    return base64.b64encode(f"variant:{index}".encode()).decode()


def _index(cursor: str) -> int:
    try:
        return int(base64.b64decode(cursor).decode().split(":", 1)[1])
    except (ValueError, IndexError) as exc:
        raise GraphQLError(f"Invalid cursor {cursor!r}") from exc


class Bucket:
    """The shop's leaky cost bucket."""

    def __init__(self, maximum: float, restore_rate: float) -> None:
        self.maximum = maximum
        self.restore_rate = restore_rate
        self.available = maximum
        self.at = time.monotonic()

    def refill(self) -> None:
        """Leak points back in at restore_rate per second, up to the maximum."""
        now = time.monotonic()
        self.available = min(self.maximum, self.available + (now - self.at) * self.restore_rate)
        self.at = now

    def status(self) -> dict[str, float]:
        """The throttleStatus object Shopify returns."""
        return {
            "maximumAvailable": self.maximum,
            "currentlyAvailable": round(self.available, 1),
            "restoreRate": self.restore_rate,
        }


def routes(world: World) -> list[Route]:
    """Shopify's Admin GraphQL endpoint and an inspection route, bound to a world."""
    state: dict[str, Any] = {"bucket": None, "config": None, "index": None, "products": None}

    def variant_index() -> dict[str, tuple[str, str]]:
        """variant GID -> (sku, product GID), built once from the world's catalog."""
        if state["index"] is None:
            state["index"] = {row["variant_id"]: (row["sku"], row["product_id"]) for row in world.catalog}
            state["products"] = {product for _, product in state["index"].values()}
        return state["index"]

    def faults() -> dict[str, Any]:
        return world.faults.get("shopify", {})

    def bucket() -> Bucket:
        config = (
            float(faults().get("bucket_max", DEFAULT_BUCKET_MAX)),
            float(faults().get("restore_rate", DEFAULT_RESTORE_RATE)),
        )
        # A reset clears the counters, and new bucket settings start a full bucket.
        if state["bucket"] is None or state["config"] != config or world.counters["shopify.requests"] <= 1:
            state["bucket"], state["config"] = Bucket(*config), config
        current: Bucket = state["bucket"]
        current.refill()
        return current

    def take(name: str) -> bool:
        """Consume one of the next-N fault counters; True if it fired."""
        remaining = int(faults().get(name, 0))
        if remaining > 0:
            faults()[name] = remaining - 1
            return True
        return False

    def cost_extension(requested: int, actual: int | None, current: Bucket) -> dict[str, Any]:
        return {
            "cost": {
                "requestedQueryCost": requested,
                "actualQueryCost": actual,
                "throttleStatus": current.status(),
            }
        }

    def bulk_update(
        info: Any, productId: str, variants: list[dict[str, Any]], allowPartialUpdates: bool = False
    ) -> dict[str, Any]:
        index = variant_index()
        if productId not in state["products"]:
            error = {
                "field": ["productId"],
                "message": "Product does not exist",
                "code": "PRODUCT_DOES_NOT_EXIST",
            }
            return {"product": None, "productVariants": None, "userErrors": [error]}
        rejected = set(faults().get("reject_skus", []))
        errors: list[dict[str, Any]] = []
        valid: list[tuple[dict[str, Any], str]] = []
        for i, variant in enumerate(variants):
            problem = _check_variant(variant, index, productId, rejected)
            if problem:
                code, message, field_name = problem
                errors.append({"field": ["variants", str(i), field_name], "message": message, "code": code})
            else:
                valid.append((variant, index[variant["id"]][0]))
        world.counters["shopify.user_errors"] += len(errors)
        if errors and not allowPartialUpdates:
            return {"product": {"id": productId}, "productVariants": [], "userErrors": errors}
        updated = []
        for variant, sku in valid:
            current = world.storefront_prices.get(sku, {})
            price = variant.get("price", current.get("price"))
            policy = variant.get("inventoryPolicy") or current.get("inventory_policy", "DENY")
            supplier = next(
                (m.get("value") for m in variant.get("metafields") or [] if m.get("key") == "supplier"),
                current.get("supplier"),
            )
            world.storefront_prices[sku] = {
                "sku": sku,
                "price": None if price is None else str(Decimal(str(price))),
                "available": policy == "CONTINUE",
                "inventory_policy": policy,
                "supplier": supplier,
                "variant_id": variant["id"],
                "via": "shopify",
            }
            world.counters["shopify.variant_updates"] += 1
            updated.append(
                {
                    "id": variant["id"],
                    "sku": sku,
                    "price": price,
                    "inventoryPolicy": policy,
                    "product": {"id": productId},
                }
            )
        return {"product": {"id": productId}, "productVariants": updated, "userErrors": errors}

    def variant_node(row: dict[str, Any]) -> dict[str, Any]:
        """A ProductVariant as the shop shows it now."""
        current = world.storefront_prices.get(row["sku"], {})
        supplier = current.get("supplier") if current.get("via") == "shopify" else None

        def metafield(info: Any, namespace: str, key: str) -> dict[str, Any] | None:
            if (namespace, key) != ("pricing", "supplier") or supplier is None:
                return None
            return {"namespace": namespace, "key": key, "value": supplier}

        shown = current if current.get("via") == "shopify" else {}
        return {
            "id": row["variant_id"],
            "sku": row["sku"],
            "price": shown.get("price") or "0.00",
            "inventoryPolicy": shown.get("inventory_policy", "DENY"),
            "product": {"id": row["product_id"]},
            "metafield": metafield,
        }

    def product_variants(info: Any, first: int | None = None, after: str | None = None) -> dict[str, Any]:
        size = MAX_PAGE if first is None else first
        if not 1 <= size <= MAX_PAGE:
            raise GraphQLError(f"first must be between 1 and {MAX_PAGE}")
        rows = world.catalog
        start = _index(after) + 1 if after else 0
        end = min(start + size, len(rows))
        page = start // size + 1
        world.counters["shopify.variant_reads"] += 1
        emptied = faults().get("variants_empty_page_at") == page
        edges = (
            []
            if emptied
            else [{"cursor": _cursor(i), "node": variant_node(rows[i])} for i in range(start, end)]
        )
        return {
            "nodes": [edge["node"] for edge in edges],
            "edges": edges,
            "pageInfo": {
                "hasNextPage": end < len(rows),
                "endCursor": _cursor(end - 1) if end > start else after,
            },
        }

    def product_variants_count(info: Any) -> dict[str, Any]:
        return {"count": len(world.catalog) + int(faults().get("wrong_count", 0) or 0), "precision": "EXACT"}

    root = {
        "productVariantsBulkUpdate": bulk_update,
        "productVariants": product_variants,
        "productVariantsCount": product_variants_count,
    }

    async def graphql_endpoint(request: Request) -> JSONResponse:
        world.counters["shopify.requests"] += 1
        if not _VERSION.match(request.path_params["version"]):
            return JSONResponse({"errors": "Not Found"}, status_code=404)
        token = os.environ.get("SHOPIFY_ACCESS_TOKEN") or DEFAULT_TOKEN
        if request.headers.get("X-Shopify-Access-Token") != token:
            world.counters["shopify.unauthorized"] += 1
            message = "[API] Invalid API key or access token (unrecognized login or wrong password)"
            return JSONResponse({"errors": message}, status_code=401)
        if "status" in faults():
            status = int(faults()["status"])
            return JSONResponse({"errors": f"forced {status}"}, status_code=status)
        if take("fail_next"):
            return JSONResponse(
                {"errors": "Service unavailable"}, status_code=503, headers={"Retry-After": "1"}
            )
        try:
            payload = await request.json()
            document = parse(payload["query"])
        except GraphQLError as exc:
            return JSONResponse({"errors": [exc.formatted]})
        except (ValueError, KeyError, TypeError):
            return JSONResponse(
                {"errors": [{"message": "body must be JSON with a 'query'"}]}, status_code=400
            )
        problems = validate(schema(), document)
        if problems:
            return JSONResponse({"errors": [p.formatted for p in problems]})
        requested = requested_cost(document, payload.get("variables"))
        current = bucket()
        if requested > current.maximum:
            error = {
                "message": f"Query cost is {requested}, which exceeds the single query max cost limit "
                f"({current.maximum:g}).",
                "extensions": {"code": "MAX_COST_EXCEEDED", "cost": requested},
            }
            return JSONResponse({"errors": [error], "extensions": cost_extension(requested, None, current)})
        if take("throttle_next") or current.available < requested:
            world.counters["shopify.throttled"] += 1
            error = {
                "message": "Throttled",
                "extensions": {
                    "code": "THROTTLED",
                    "documentation": "https://shopify.dev/api/usage/rate-limits",
                },
            }
            return JSONResponse({"errors": [error], "extensions": cost_extension(requested, None, current)})
        current.available -= requested
        if take("internal_error_next"):
            error = {"message": "Internal error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}
            return JSONResponse({"errors": [error], "extensions": cost_extension(requested, None, current)})
        result = execute_sync(schema(), document, root_value=root, variable_values=payload.get("variables"))
        world.counters["shopify.mutations"] += _mutation_fields(document)
        if take("lose_response_next"):
            return JSONResponse({"errors": "gateway lost the response"}, status_code=502)
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [error.formatted for error in result.errors]
        body["extensions"] = cost_extension(requested, requested, current)
        return JSONResponse(body)

    async def inspect(request: Request) -> JSONResponse:
        variants = {sku: row for sku, row in world.storefront_prices.items() if row.get("via") == "shopify"}
        current = state["bucket"]
        return JSONResponse(
            {
                "variants": variants,
                "bucket": current.status() if current else None,
                "counters": {k: v for k, v in world.counters.items() if k.startswith("shopify.")},
            }
        )

    return [
        Route("/admin/api/{version}/graphql.json", graphql_endpoint, methods=["POST"]),
        Route("/_state", inspect, methods=["GET"]),
    ]


def _check_variant(
    variant: dict[str, Any], index: dict[str, tuple[str, str]], product_id: str, rejected: set[str]
) -> tuple[str, str, str] | None:
    """Why Shopify would refuse this variant input: (code, message, field), or None."""
    variant_id = variant.get("id")
    if not variant_id:
        return "INVALID_INPUT", "Variant id is required to update a variant", "id"
    if variant_id not in index:
        return "PRODUCT_VARIANT_DOES_NOT_EXIST", "Product variant does not exist", "id"
    sku, owner = index[variant_id]
    if owner != product_id:
        return "MUST_BE_FOR_THIS_PRODUCT", "Product variant does not belong to this product", "id"
    if variant.get("price") is not None:
        try:
            price = Decimal(str(variant["price"]))
        except InvalidOperation:
            return "INVALID_INPUT", f"Price {variant['price']!r} is not a valid amount", "price"
        if price < 0:
            return "GREATER_THAN_OR_EQUAL_TO", "Price must be greater than or equal to 0", "price"
    if sku in rejected:
        return "INVALID_INPUT", f"Variant {sku} cannot be updated (sandbox fault reject_skus)", "price"
    return None
