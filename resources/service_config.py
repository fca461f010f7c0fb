"""The `service_config` resource (`ServiceConfigResource`): SERVICE_CONFIG, re-read at every run."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from dagster import ConfigurableResource, Failure
from pydantic import Field

from resources.config import DEFAULT_REGISTRY, ConfigError, ServiceConfig, load_registry, load_service_config


@lru_cache(maxsize=8)
def _registry_ids(path: str, mtime_ns: int) -> tuple[str, ...]:
    """The supplier ids of a registry file, cached per file version (it is read at every step)."""
    return tuple(load_registry(path).order)


def registry_ids(path: str | None = None) -> list[str]:
    """The supplier ids of the registry at `path`, else $SUPPLIER_REGISTRY, else the shipped one."""
    file = Path(path or os.environ.get("SUPPLIER_REGISTRY") or DEFAULT_REGISTRY)
    try:
        mtime = file.stat().st_mtime_ns
    except OSError:
        mtime = -1  # load_registry names the missing file
    return list(_registry_ids(str(file), mtime))


class ServiceConfigResource(ConfigurableResource):
    """The live SERVICE_CONFIG switches (dry_run, suppliers on/off, markup, guard, staleness)."""

    # A JSON string set here wins over the environment; tests use it, deployments leave it empty.
    override_json: str | None = None
    registry_path: str | None = Field(
        default=None,
        description="The supplier registry whose ids SERVICE_CONFIG may switch; unset: $SUPPLIER_REGISTRY, "
        "else the shipped registry",
    )

    def load(self) -> ServiceConfig:
        """Read and validate SERVICE_CONFIG now (env var, else SERVICE_CONFIG_FILE, else defaults).

        An invalid value, or a switch for a supplier the registry does not have, fails the step with a
        dagster Failure whose description names the source (env var or file) and the key, so the UI
        shows both on its first line.
        """
        try:
            known = registry_ids(self.registry_path)
            if self.override_json is not None:
                return load_service_config({"SERVICE_CONFIG": self.override_json}, known_suppliers=known)
            return load_service_config(known_suppliers=known)
        except ConfigError as exc:
            # The description is the whole message: the UI shows it on the failed step's first line.
            raise Failure(description=str(exc), allow_retries=False) from None
