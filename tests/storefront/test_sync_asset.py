"""The storefront_sync asset against the sandbox storefront: diff, dry run, failures, exactly once."""

from collections import Counter
from datetime import UTC, datetime

import polars as pl

from pricing_assets.logic.ledger import empty_ledger
from pricing_assets.storefront_sync import sync_batch
from resources.push_state import PushJournal
from resources.storefront import PushStats, Storefront
from resources.warehouse import Warehouse
from tests.storefront.conftest import (
    FAST,
    SECRET,
    read_journal,
    read_ledger,
    sync,
    sync_metadata,
    targets,
    write_targets,
)


def applied_per_sku(sandbox) -> Counter[str]:
    """How many accepted pushes carried each SKU."""
    return Counter(entry["sku"] for push in sandbox.pushes()["pushes"] for entry in push["prices"])


def test_pushes_only_the_diff_in_batches_of_the_configured_size(sandbox, warehouse_dir):
    write_targets(warehouse_dir, targets(25))
    first = sync(warehouse_dir, sandbox.url, config={"push_batch_size": 10})
    meta = sync_metadata(first)
    assert first.success
    assert (meta["pushed"], meta["requests"], meta["unchanged"], meta["failed"]) == (25, 3, 0, 0)
    ledger = read_ledger(warehouse_dir)
    assert ledger.height == 25 and ledger.get_column("pending_status").null_count() == 25
    assert ledger.get_column("idempotency_key").n_unique() == 3

    # Acknowledged chunks stay journaled until a later sync sees them in the written ledger.
    assert [len(chunk) for chunk in read_journal(warehouse_dir)] == [10, 10, 5]

    again = sync(warehouse_dir, sandbox.url, config={"push_batch_size": 10})
    assert sync_metadata(again)["requests"] == 0 and sync_metadata(again)["unchanged"] == 25
    assert read_journal(warehouse_dir) == []

    moved = targets(25).with_columns(
        pl.when(pl.col("sku") == "SKU-000003")
        .then(pl.col("price") + 1)
        .otherwise(pl.col("price"))
        .alias("price")
    )
    write_targets(warehouse_dir, moved)
    third = sync(warehouse_dir, sandbox.url, config={"push_batch_size": 10})
    assert (sync_metadata(third)["pushed"], sync_metadata(third)["requests"]) == (1, 1)
    last = sandbox.pushes()["pushes"][-1]["prices"]
    assert [(e["sku"], e["price"], e["version"]) for e in last] == [("SKU-000003", "11.7500", 2)]
    assert sum(applied_per_sku(sandbox).values()) == 26


def test_dry_run_sends_nothing_and_records_what_it_would_push(sandbox, warehouse_dir):
    write_targets(warehouse_dir, targets(12))
    result = sync(warehouse_dir, sandbox.url, config={"dry_run": True, "push_batch_size": 5})
    assert result.success
    meta = sync_metadata(result)
    assert (meta["would_push"], meta["pushed"], meta["requests"]) == (12, 0, 0)
    assert "SKU-000011" in meta["would_push_preview"]
    assert sandbox.counters().get("storefront.requests", 0) == 0
    ledger = read_ledger(warehouse_dir)
    assert ledger.get_column("pending_status").to_list() == ["would_push"] * 12
    assert ledger.get_column("pending_price").to_list() == targets(12).get_column("price").to_list()
    assert ledger.get_column("price").null_count() == 12  # nothing acknowledged
    assert read_journal(warehouse_dir) == []


def test_held_prices_are_not_pushed_and_show_why(sandbox, warehouse_dir):
    frame = targets(3).with_columns(
        (pl.col("sku") == "SKU-000001").alias("held"),
        pl.when(pl.col("sku") == "SKU-000001").then(pl.lit("change 45% > 30%")).alias("hold_reason"),
    )
    write_targets(warehouse_dir, frame)
    meta = sync_metadata(sync(warehouse_dir, sandbox.url))
    assert (meta["pushed"], meta["held"]) == (2, 1)
    held = read_ledger(warehouse_dir).filter(pl.col("sku") == "SKU-000001").row(0, named=True)
    assert (held["pending_status"], held["pending_error"], held["price"]) == (
        "held",
        "change 45% > 30%",
        None,
    )
    assert "SKU-000001" not in applied_per_sku(sandbox)


def test_storefront_down_mid_sync_then_back_loses_nothing_and_applies_nothing_twice(sandbox, warehouse_dir):
    write_targets(warehouse_dir, targets(35))
    # Chunk 1 is answered; chunk 2 is applied but the storefront dies before answering; then it is down.
    sandbox.control(faults={"storefront": {"down_after": 1, "retry_after": 0}})
    down = sync(warehouse_dir, sandbox.url, config={"push_batch_size": 10})
    assert not down.success
    meta = sync_metadata(down)
    assert (meta["pushed"], meta["in_doubt"], meta["deferred"], meta["failed"]) == (10, 10, 15, 25)
    ledger = read_ledger(warehouse_dir)  # written although the run failed: what was acknowledged
    assert ledger.filter(pl.col("pending_status").is_null()).height == 10
    statuses = Counter(ledger.get_column("pending_status").drop_nulls().to_list())
    assert statuses == {"in_doubt": 10, "deferred": 15}
    assert [len(chunk) for chunk in read_journal(warehouse_dir)] == [10, 10]
    assert sandbox.counters()["storefront.applied"] == 20

    # Back up, and with another chunk size: an unconfirmed chunk must still go out byte for byte.
    sandbox.control(faults={"storefront": None})
    back = sync(warehouse_dir, sandbox.url, config={"push_batch_size": 7})
    assert back.success
    meta = sync_metadata(back)
    assert (meta["resent_chunks"], meta["duplicates_avoided"], meta["pushed"], meta["failed"]) == (
        1,
        1,
        25,
        0,
    )
    seen = sandbox.pushes()
    assert seen["duplicates"] == 1 and seen["repeated_versions"] == 0
    per_sku = applied_per_sku(sandbox)
    assert len(per_sku) == 35 and set(per_sku.values()) == {1}
    expected = {r["sku"]: f"{r['price']}" for r in targets(35).iter_rows(named=True)}
    assert {sku: row["price"] for sku, row in seen["prices"].items()} == expected
    ledger = read_ledger(warehouse_dir)
    assert ledger.get_column("pending_status").null_count() == 35
    assert ledger.get_column("version").to_list() == [1] * 35


def test_a_400_on_one_request_leaves_only_that_chunk_pending(sandbox, warehouse_dir):
    write_targets(warehouse_dir, targets(30))
    sandbox.control(faults={"storefront": {"reject_skus": ["SKU-000012"]}})
    failed = sync(warehouse_dir, sandbox.url, config={"push_batch_size": 10})
    assert not failed.success
    meta = sync_metadata(failed)
    assert (meta["pushed"], meta["refused"], meta["requests"]) == (20, 10, 3)
    failure = next(e for e in failed.all_events if e.is_step_failure)
    assert "HTTP 400" in failure.step_failure_data.user_failure_data.description
    refused = read_ledger(warehouse_dir).filter(pl.col("pending_status") == "refused")
    assert refused.get_column("sku").to_list() == [f"SKU-{i:06d}" for i in range(10, 20)]
    assert all("SKU-000012" in error for error in refused.get_column("pending_error").to_list())
    # A refusal is definitive (nothing applied): it is not journaled, the next sync re-diffs it.
    journaled = {entry["sku"] for chunk in read_journal(warehouse_dir) for entry in chunk}
    assert len(journaled) == 20 and "SKU-000012" not in journaled

    sandbox.control(faults={"storefront": None})
    fixed = sync(warehouse_dir, sandbox.url, config={"push_batch_size": 10})
    assert fixed.success and (sync_metadata(fixed)["pushed"], sync_metadata(fixed)["requests"]) == (10, 1)
    assert set(applied_per_sku(sandbox).values()) == {1} and len(applied_per_sku(sandbox)) == 30


def test_lost_response_inside_a_sync_is_not_applied_twice(sandbox, warehouse_dir):
    write_targets(warehouse_dir, targets(8))
    sandbox.control(faults={"storefront": {"lose_response_next": 1}})
    result = sync(warehouse_dir, sandbox.url, config={"push_batch_size": 4})
    assert result.success
    meta = sync_metadata(result)
    assert (meta["pushed"], meta["duplicates_avoided"], meta["requests"]) == (8, 1, 3)
    assert set(applied_per_sku(sandbox).values()) == {1}


def test_bad_secret_is_refused_by_the_sandbox_and_reported(sandbox, warehouse_dir):
    write_targets(warehouse_dir, targets(3))
    result = sync(warehouse_dir, sandbox.url, secret="not-the-secret")
    assert not result.success
    assert sync_metadata(result)["refused"] == 3
    assert sandbox.pushes()["bad_signatures"] == 1 and sandbox.pushes()["prices"] == {}
    errors = read_ledger(warehouse_dir).get_column("pending_error").to_list()
    assert all("401" in e and "X-Signature" in e for e in errors)
    assert all("not-the-secret" not in e for e in errors)


def test_crash_after_sending_resends_the_journal_not_a_new_diff(sandbox, warehouse_dir):
    """The process dies after the storefront applied the chunks but before the ledger was written."""
    warehouse = Warehouse(base_dir=str(warehouse_dir))
    sf = Storefront(url=f"{sandbox.url}/storefront", webhook_secret=SECRET, **FAST)
    frame = targets(9)
    now = datetime.now(UTC)
    with sf.open_pusher() as pusher:
        first = sync_batch(
            "batch-000",
            frame,
            empty_ledger(),
            journal=PushJournal(warehouse),
            pusher=pusher,
            push_batch_size=4,
            dry_run=False,
            stats=PushStats(),
            now=now,
        )
        assert first.counts["pushed"] == 9
        # ... crash: first.ledger is lost. The next sync starts from an empty ledger, other chunk size.
        stats = PushStats()
        second = sync_batch(
            "batch-000",
            frame,
            empty_ledger(),
            journal=PushJournal(warehouse),
            pusher=pusher,
            push_batch_size=5,
            dry_run=False,
            stats=stats,
            now=now,
        )
    assert (second.counts["resent_chunks"], stats.duplicates_avoided, stats.requests) == (3, 3, 3)
    assert second.ledger.get_column("pending_status").null_count() == 9
    assert second.ledger.get_column("price").to_list() == frame.get_column("price").to_list()
    assert sandbox.pushes()["repeated_versions"] == 0 and set(applied_per_sku(sandbox).values()) == {1}


def test_nothing_is_sent_once_the_storefront_was_found_unavailable(warehouse_dir):
    """A later batch of the same run: everything deferred, no request, journal untouched."""

    class Unreachable:
        adapter = "test"

        def push_prices(self, batch, entries, *, stats):
            raise AssertionError("must not be called")

    warehouse = Warehouse(base_dir=str(warehouse_dir))
    result = sync_batch(
        "batch-001",
        targets(4, batch="batch-001"),
        empty_ledger(),
        journal=PushJournal(warehouse),
        pusher=Unreachable(),
        push_batch_size=2,
        dry_run=False,
        stats=PushStats(),
        now=datetime.now(UTC),
        may_send=False,
    )
    assert result.counts["deferred"] == 4 and result.counts["pushed"] == 0
    assert set(result.ledger.get_column("pending_status").to_list()) == {"deferred"}
    assert read_journal(warehouse_dir, "batch-001") == []


def check_evaluation(result, name: str = "storefront_acknowledged"):
    """The storefront_sync check evaluation of a run (also recorded when the step fails)."""
    evaluations = [
        event.event_specific_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    return next(e for e in evaluations if e.check_name == name)


def test_a_stray_409_is_pending_and_a_failed_check_then_the_right_prices_once_it_clears(
    sandbox, warehouse_dir
):
    """Issue 13: a 409 from a proxy used to count as "already applied": 10 SKUs silently lost."""
    write_targets(warehouse_dir, targets(20))
    sandbox.control(faults={"storefront": {"stray_409_next": 1}})
    first = sync(warehouse_dir, sandbox.url, config={"push_batch_size": 10})
    assert not first.success
    meta = sync_metadata(first)
    assert (meta["pushed"], meta["refused"], meta["duplicates_avoided"]) == (10, 10, 0)
    check = check_evaluation(first)
    assert not check.passed and check.severity.value == "ERROR"
    assert "10 prices not acknowledged by the storefront" in check.description
    assert "resource version changed" in check.description  # the 409's body is the reason
    ledger = read_ledger(warehouse_dir)
    refused = ledger.filter(pl.col("pending_status") == "refused")
    assert refused.height == 10 and refused.get_column("price").null_count() == 10
    assert all("storefront answered 409" in e for e in refused.get_column("pending_error").to_list())
    assert len(sandbox.pushes()["prices"]) == 10

    sandbox.control(faults={"storefront": None})
    second = sync(warehouse_dir, sandbox.url, config={"push_batch_size": 10})
    assert second.success and check_evaluation(second).passed
    assert sync_metadata(second)["pushed"] == 10
    seen = sandbox.pushes()
    expected = {r["sku"]: str(r["price"]) for r in targets(20).iter_rows(named=True)}
    assert {sku: row["price"] for sku, row in seen["prices"].items()} == expected
    assert seen["repeated_versions"] == 0 and set(applied_per_sku(sandbox).values()) == {1}


def test_a_storefront_answering_409_to_everything_never_reports_success(sandbox, warehouse_dir):
    write_targets(warehouse_dir, targets(12))
    sandbox.control(faults={"storefront": {"status": 409}})
    result = sync(warehouse_dir, sandbox.url, config={"push_batch_size": 5})
    assert not result.success
    assert (sync_metadata(result)["pushed"], sync_metadata(result)["refused"]) == (0, 12)
    assert not check_evaluation(result).passed
    assert read_ledger(warehouse_dir).get_column("price").null_count() == 12
    # The next sync still has everything to push (nothing was taken as applied).
    sandbox.control(faults={"storefront": None})
    again = sync(warehouse_dir, sandbox.url, config={"push_batch_size": 5})
    assert again.success and sync_metadata(again)["pushed"] == 12
    assert len(sandbox.pushes()["prices"]) == 12


def test_a_stray_409_to_a_resent_chunk_keeps_it_in_doubt_and_resent_under_its_key(sandbox, warehouse_dir):
    write_targets(warehouse_dir, targets(10))
    # The chunk is applied but its answer is lost and the storefront stays down: in doubt, journaled.
    sandbox.control(faults={"storefront": {"down_after": 0, "retry_after": 0}})
    assert sync_metadata(sync(warehouse_dir, sandbox.url))["in_doubt"] == 10
    sandbox.control(faults={"storefront": None})  # back up, but a proxy answers the resend with a 409
    sandbox.control(faults={"storefront": {"stray_409_next": 1}})
    stray = sync(warehouse_dir, sandbox.url)
    assert not stray.success
    assert (sync_metadata(stray)["in_doubt"], sync_metadata(stray)["pushed"]) == (10, 0)
    assert sandbox.counters()["storefront.stray_409"] == 1
    assert "resource version changed" in check_evaluation(stray).description
    assert [len(chunk) for chunk in read_journal(warehouse_dir)] == [10]  # still journaled
    sandbox.control(faults={"storefront": None})
    back = sync(warehouse_dir, sandbox.url)
    assert back.success
    assert (sync_metadata(back)["duplicates_avoided"], sync_metadata(back)["pushed"]) == (1, 10)
    seen = sandbox.pushes()
    assert len(seen["pushes"]) == 1 and seen["repeated_versions"] == 0
    expected = {r["sku"]: str(r["price"]) for r in targets(10).iter_rows(named=True)}
    assert {sku: row["price"] for sku, row in seen["prices"].items()} == expected
