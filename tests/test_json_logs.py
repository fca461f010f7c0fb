"""Run logs as JSON lines through the instance configs (dagster.yaml, deploy/postgres/dagster.yaml)."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import (
    BackfillPolicy,
    DagsterInstance,
    StaticPartitionsDefinition,
    asset,
    materialize,
)

from resources.json_logs import JsonLinesHandler, JsonLogFormatter

ROOT = Path(__file__).resolve().parent.parent
BATCHES = StaticPartitionsDefinition([f"batch-{i:03d}" for i in range(4)])
RANGE = {
    "dagster/asset_partition_range_start": "batch-001",
    "dagster/asset_partition_range_end": "batch-002",
}


@asset(partitions_def=BATCHES, backfill_policy=BackfillPolicy.multi_run(4))
def priced(context) -> None:
    """A partitioned asset that logs at info and debug."""
    context.log.info(f"pricing {len(context.partition_keys)} batches")
    context.log.debug("a debug detail")


def home_with(tmp_path: Path, config: dict[str, Any]) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_local_instance_appends_every_run_event_as_a_json_line(tmp_path, monkeypatch, capfd):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("DAGSTER_JSON_LOG", raising=False)
    with DagsterInstance.from_config(str(home)) as instance:
        single = materialize([priced], partition_key="batch-003", instance=instance)
        ranged = materialize([priced], tags=RANGE, instance=instance)
    lines = read_lines(home / "logs" / "runs.jsonl")
    by_run = {
        run: [line for line in lines if line["run_id"] == run] for run in (single.run_id, ranged.run_id)
    }
    assert len(lines) == sum(len(found) for found in by_run.values())  # every line carries its run id
    for run_id, partition in ((single.run_id, "batch-003"), (ranged.run_id, "batch-001...batch-002")):
        events = by_run[run_id]
        assert {line["event_type"] for line in events} >= {"PIPELINE_START", "STEP_START", "PIPELINE_SUCCESS"}
        assert all(
            set(line) >= {"timestamp", "level", "message", "job", "asset_key", "partition"} for line in events
        )
        assert all(line["timestamp"].endswith("Z") for line in events)
        user = [line for line in events if line["event_type"] is None]
        assert [line["message"] for line in user] == [
            f"pricing {1 if partition == 'batch-003' else 2} batches"
        ]
        assert (
            user[0]["level"] == "info" and user[0]["step"] == "priced" and user[0]["partition"] == partition
        )
    materialized = [line for line in by_run[ranged.run_id] if line["event_type"] == "ASSET_MATERIALIZATION"]
    assert sorted((line["asset_key"], line["partition"]) for line in materialized) == [
        ("priced", "batch-001"),
        ("priced", "batch-002"),
    ]
    # The terminal (the default console logger) shows INFO and above, not every DEBUG event.
    err = capfd.readouterr().err
    assert "pricing 1 batches" in err and "STEP_START" not in err and "a debug detail" not in err


def test_the_postgres_deployment_block_writes_json_to_stdout(tmp_path, monkeypatch, capfd):
    deployed = yaml.safe_load((ROOT / "deploy" / "postgres" / "dagster.yaml").read_text())
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    # The same block as the local instance, except where the lines go.
    handler = deployed["python_logs"]["dagster_handler_config"]["handlers"]["json_lines"]
    assert handler["destination"] == "stdout"
    local["python_logs"]["dagster_handler_config"]["handlers"]["json_lines"]["destination"] = "stdout"
    assert deployed["python_logs"] == local["python_logs"]
    # On a SQLite instance here (the PostgreSQL storage is tested in tests/integration).
    config = {"python_logs": deployed["python_logs"], "telemetry": {"enabled": False}}
    home = home_with(tmp_path, config)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("DAGSTER_JSON_LOG", raising=False)
    with DagsterInstance.from_config(str(home)) as instance:
        result = materialize([priced], partition_key="batch-000", instance=instance)
    out = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    assert out and all(line["run_id"] == result.run_id and line["partition"] == "batch-000" for line in out)


def test_dagster_json_log_overrides_the_destination(tmp_path, monkeypatch):
    target = tmp_path / "elsewhere" / "runs.jsonl"
    monkeypatch.setenv("DAGSTER_JSON_LOG", str(target))
    handler = JsonLinesHandler(destination="stdout")
    record = logging.LogRecord("dagster", logging.WARNING, __file__, 1, "careful", None, None)
    handler.handle(record)
    handler.handle(record)
    assert [line["message"] for line in read_lines(target)] == ["careful", "careful"]


def test_a_record_outside_a_run_and_an_exception_stay_one_line():
    formatter = JsonLogFormatter()
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord(
            "dagster.x", logging.ERROR, __file__, 1, "failed %s", ("now",), sys.exc_info()
        )
    line = formatter.format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed now" and entry["level"] == "error" and entry["run_id"] is None
    assert "ValueError: bad\nthing" in entry["exception"]


def test_run_tags_and_config_never_reach_the_line():
    record = logging.LogRecord("dagster", logging.INFO, __file__, 1, "m", None, None)
    record.dagster_meta = {  # what Dagster's log manager attaches to a run's records
        "run_id": "r",
        "job_name": "j",
        "job_tags": {"dagster/partition": "batch-001", "token": "s3cr3t"},
        "step_key": None,
        "orig_message": "hello",
        "dagster_event": None,
    }
    line = JsonLogFormatter().format(record)
    assert "s3cr3t" not in line and json.loads(line)["partition"] == "batch-001"


@pytest.mark.parametrize("name", ["dagster.yaml", "deploy/postgres/dagster.yaml"])
def test_the_instance_configs_validate(name, tmp_path, monkeypatch):
    config = yaml.safe_load((ROOT / name).read_text())
    config.pop("storage")  # the block under test, on the default storage
    home = home_with(tmp_path, config)
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.python_log_level == "INFO"
        assert instance.get_python_log_dagster_handler_config()["handlers"]["json_lines"]["level"] == "DEBUG"
