"""Runtime configuration as a resource: SERVICE_CONFIG is re-read at every run, never cached."""

from __future__ import annotations

from dagster import ConfigurableResource

from resources.config import ServiceConfig, load_service_config


class RuntimeConfig(ConfigurableResource):
    """The live SERVICE_CONFIG switches (dry_run, suppliers on/off, markup, guard, staleness)."""

    # A JSON string set here wins over the environment; tests use it, deployments leave it empty.
    override_json: str | None = None

    def load(self) -> ServiceConfig:
        """Read and validate SERVICE_CONFIG now (env var, else SERVICE_CONFIG_FILE, else defaults)."""
        if self.override_json is not None:
            return load_service_config({"SERVICE_CONFIG": self.override_json})
        return load_service_config()
