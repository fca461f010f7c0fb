"""Fixtures of the integration tests: the production instance config on a fresh PostgreSQL database."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PgHome:
    """A DAGSTER_HOME holding deploy/postgres/dagster.yaml, and the database URL its config reads."""

    home: Path
    database_url: str


@pytest.fixture
def pg_home(pg_database: sqlalchemy.engine.URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PgHome:
    """deploy/postgres/dagster.yaml in a temp DAGSTER_HOME on a fresh database (both set in the env)."""
    database_url = pg_database.set(drivername="postgresql").render_as_string(hide_password=False)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "deploy" / "postgres" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", database_url)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return PgHome(home, database_url)
