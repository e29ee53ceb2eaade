"""The run store contract: every backend must pass this whole module unchanged.

The tests of an optional capability (``BulkClaims``, ``SignalsChanges``,
``AnnouncesRunnable``) run for every backend that declares it and are
skipped, naming the capability, for the others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import anyio
import pytest

from kitaru import StorageError
from kitaru.storage import (
    AnnouncesRunnable,
    BulkClaims,
    JournalEntry,
    RunPatch,
    RunRecord,
    RunStore,
    SignalsChanges,
    open_store,
)
from kitaru.storage._url import scheme_of
from tests.storage._records import T0, make_entry, make_message, make_run

pytestmark = pytest.mark.anyio


async def add(store: RunStore, *runs: RunRecord) -> None:
    for run in runs:
        assert (await store.create_run(run))[1]


# -- create_run / get_run -------------------------------------------------------


async def test_create_run_returns_the_stored_record(store: RunStore) -> None:
    run = make_run("r1")
    assert await store.create_run(run) == (run, True)
    assert await store.get_run("r1") == run


async def test_create_run_is_idempotent_and_keeps_the_first_record(store: RunStore) -> None:
    first = make_run("r1", flow="a")
    await store.create_run(first)
    stored, created = await store.create_run(make_run("r1", flow="b", status="waiting"))
    assert not created
    assert stored == first
    assert await store.get_run("r1") == first


async def test_every_run_field_round_trips(store: RunStore) -> None:
    run = RunRecord(
        id="r1",
        flow="flow",
        status="waiting",
        created_at=T0,
        updated_at=T0 + 1.5,
        input=b'{"x": 1}',
        output=b'"out"',
        output_ref="sha256:abc",
        error="ValueError: bad",
        error_info=b'{"type": "builtins.ValueError"}',
        owner="worker-1",
        lease_until=T0 + 30,
        replay_of="r0",
        parent_id="p0",
        wait=b'{"topic": "approve"}',
        wake_at=T0 + 60,
        input_tokens=12,
        output_tokens=34,
        cost_usd=0.0125,
        metadata=b'{"k": "v"}',
    )
    await store.create_run(run)
    assert await store.get_run("r1") == run


async def test_get_run_of_unknown_id_is_none(store: RunStore) -> None:
    assert await store.get_run("missing") is None


# -- list_runs --------------------------------------------------------------------


async def test_list_runs_is_newest_first_with_id_breaking_ties(store: RunStore) -> None:
    await add(
        store,
        make_run("b", created_at=T0 + 1),
        make_run("c", created_at=T0 + 1),
        make_run("a", created_at=T0 + 2),
        make_run("d", created_at=T0),
    )
    assert [r.id for r in await store.list_runs()] == ["a", "c", "b", "d"]


async def test_list_runs_filters_by_status_and_flow(store: RunStore) -> None:
    await add(
        store,
        make_run("1", flow="x", status="running", created_at=T0 + 1),
        make_run("2", flow="x", status="completed", created_at=T0 + 2),
        make_run("3", flow="y", status="running", created_at=T0 + 3),
        make_run("4", flow="y", status="failed", created_at=T0 + 4),
    )
    assert [r.id for r in await store.list_runs(status="running")] == ["3", "1"]
    assert [r.id for r in await store.list_runs(flow="x")] == ["2", "1"]
    assert [r.id for r in await store.list_runs(status="running", flow="y")] == ["3"]
    assert await store.list_runs(status="waiting") == []
    assert await store.list_runs(flow="z") == []


async def test_list_runs_limit_keeps_the_newest(store: RunStore) -> None:
    await add(store, *(make_run(f"r{i}", created_at=T0 + i) for i in range(5)))
    assert [r.id for r in await store.list_runs(limit=2)] == ["r4", "r3"]
    assert await store.list_runs(limit=0) == []


# -- journal ----------------------------------------------------------------------


async def test_journal_is_ordered_by_position(store: RunStore) -> None:
    await add(store, make_run("r1"), make_run("r2"))
    await store.record([make_entry("r1", 2), make_entry("r1", 0)])
    await store.record([make_entry("r2", 0), make_entry("r1", 1)])
    assert [e.position for e in await store.load_journal("r1")] == [0, 1, 2]
    assert await store.load_journal("r2") == [make_entry("r2", 0)]


async def test_journal_of_unknown_or_new_run_is_empty(store: RunStore) -> None:
    await add(store, make_run("r1"))
    assert await store.load_journal("r1") == []
    assert await store.load_journal("missing") == []


async def test_every_entry_field_round_trips(store: RunStore) -> None:
    await add(store, make_run("r1"))
    entry = JournalEntry(
        run_id="r1",
        position=7,
        name="fetch",
        kind="llm",
        status="failed",
        attempts=3,
        started_at=T0 + 0.125,
        duration_s=None,
        value=None,
        ref="sha256:def",
        error=b'{"type": "builtins.TimeoutError"}',
        metadata=b'{"tokens": 3}',
    )
    assert await store.record([entry]) is True
    assert await store.load_journal("r1") == [entry]


async def test_completed_entry_is_never_replaced(store: RunStore) -> None:
    await add(store, make_run("r1"))
    first = make_entry("r1", 0, value=b"1")
    await store.record([first])
    assert await store.record([make_entry("r1", 0, value=b"2")]) is True
    assert await store.record([make_entry("r1", 0, status="failed", value=None)]) is True
    assert await store.load_journal("r1") == [first]


@pytest.mark.parametrize("earlier", ["failed", "running"])
async def test_unfinished_entry_is_replaced(store: RunStore, earlier: str) -> None:
    await add(store, make_run("r1"))
    await store.record([make_entry("r1", 0, status=earlier, attempts=1, value=None)])
    final = make_entry("r1", 0, attempts=2, value=b"42")
    await store.record([final])
    assert await store.load_journal("r1") == [final]


async def test_record_for_unknown_run_raises(store: RunStore) -> None:
    with pytest.raises(StorageError, match="unknown run"):
        await store.record([make_entry("missing", 0)])
    assert await store.load_journal("missing") == []


async def test_entries_of_several_runs_are_all_or_nothing(store: RunStore) -> None:
    await add(store, make_run("r1"))
    with pytest.raises(StorageError, match="unknown run missing"):
        await store.record([make_entry("r1", 0), make_entry("missing", 0)])
    assert await store.load_journal("r1") == []
    await add(store, make_run("r2"))
    assert await store.record([make_entry("r1", 0), make_entry("r2", 0)]) is True
    assert [e.run_id for e in await store.load_journal("r2")] == ["r2"]


async def test_entry_of_an_unknown_run_with_a_patch(store: RunStore) -> None:
    """The guard is tested first (False, nothing written), then the entries' runs."""
    await add(store, make_run("r1"))
    refused = RunPatch("r1", updated_at=T0 + 1, status="completed", expect=("waiting",))
    assert await store.record([make_entry("missing", 0)], refused) is False
    applies = RunPatch("r1", updated_at=T0 + 1, status="completed")
    with pytest.raises(StorageError, match="unknown run missing"):
        await store.record([make_entry("missing", 0)], applies)
    stored = await store.get_run("r1")
    assert stored is not None and stored.status == "running"  # the patch did not apply
    assert await store.load_journal("missing") == []


async def test_record_with_patch_writes_both(store: RunStore) -> None:
    await add(store, make_run("r1", owner="w", lease_until=T0 + 9))
    patch = RunPatch("r1", updated_at=T0 + 5, status="completed", output=b"1", release=True)
    assert await store.record([make_entry("r1", 0)], patch) is True
    assert await store.load_journal("r1") == [make_entry("r1", 0)]
    run = await store.get_run("r1")
    assert run == make_run("r1", status="completed", output=b"1", updated_at=T0 + 5)


async def test_record_with_patch_only(store: RunStore) -> None:
    await add(store, make_run("r1"))
    assert await store.record([], RunPatch("r1", updated_at=T0 + 1, status="waiting"))
    run = await store.get_run("r1")
    assert run is not None
    assert run.status == "waiting"


async def test_record_with_unmatched_patch_writes_nothing(store: RunStore) -> None:
    await add(store, make_run("r1", status="cancelled"))
    patch = RunPatch("r1", updated_at=T0 + 5, status="completed")
    assert await store.record([make_entry("r1", 0)], patch) is False
    assert await store.load_journal("r1") == []
    assert await store.get_run("r1") == make_run("r1", status="cancelled")


async def test_record_with_patch_of_unknown_run_writes_nothing(store: RunStore) -> None:
    await add(store, make_run("r1"))
    patch = RunPatch("missing", updated_at=T0 + 5, status="completed")
    assert await store.record([make_entry("r1", 0)], patch) is False
    assert await store.load_journal("r1") == []


# -- update_run -------------------------------------------------------------------


async def test_update_run_changes_only_given_fields(store: RunStore) -> None:
    run = make_run("r1", output=b"old", error="E: x", owner="w", lease_until=T0 + 9)
    await add(store, run)
    patch = RunPatch("r1", updated_at=T0 + 3, status="failed", error_info=b"{}")
    updated = await store.update_run(patch)
    expected = dataclasses.replace(run, updated_at=T0 + 3, status="failed", error_info=b"{}")
    assert updated == expected
    assert await store.get_run("r1") == expected


async def test_update_run_release_clears_owner_and_lease(store: RunStore) -> None:
    await add(store, make_run("r1", owner="w", lease_until=T0 + 9))
    updated = await store.update_run(RunPatch("r1", updated_at=T0 + 1, release=True))
    assert updated == make_run("r1", updated_at=T0 + 1)


async def test_update_run_respects_expect(store: RunStore) -> None:
    await add(store, make_run("r1", status="completed"))
    assert await store.update_run(RunPatch("r1", updated_at=T0 + 1, status="failed")) is None
    assert await store.get_run("r1") == make_run("r1", status="completed")
    patch = RunPatch("r1", updated_at=T0 + 1, output=b"2", expect=("completed",))
    updated = await store.update_run(patch)
    assert updated == make_run("r1", status="completed", output=b"2", updated_at=T0 + 1)
    nothing = RunPatch("r1", updated_at=T0 + 2, status="failed", expect=())
    assert await store.update_run(nothing) is None


async def test_update_run_of_unknown_run_is_none(store: RunStore) -> None:
    assert await store.update_run(RunPatch("missing", updated_at=T0)) is None


# -- claim ------------------------------------------------------------------------


async def test_claim_free_run(store: RunStore) -> None:
    await add(store, make_run("r1"))
    claimed = await store.claim("r1", "me", now=T0, lease_until=T0 + 30)
    assert claimed == make_run("r1", owner="me", lease_until=T0 + 30)
    assert await store.get_run("r1") == claimed


async def test_claim_own_run_extends_the_lease(store: RunStore) -> None:
    await add(store, make_run("r1", owner="me", lease_until=T0 + 30))
    claimed = await store.claim("r1", "me", now=T0, lease_until=T0 + 60)
    assert claimed == make_run("r1", owner="me", lease_until=T0 + 60)


async def test_claim_from_dead_owner(store: RunStore) -> None:
    await add(store, make_run("r1", owner="dead", lease_until=T0 + 30))
    claimed = await store.claim("r1", "me", now=T0, lease_until=T0 + 30, dead_owners=["dead"])
    assert claimed is not None
    assert claimed.owner == "me"


async def test_claim_after_lease_expired(store: RunStore) -> None:
    await add(store, make_run("r1", owner="other", lease_until=T0 - 1))
    claimed = await store.claim("r1", "me", now=T0, lease_until=T0 + 30)
    assert claimed == make_run("r1", owner="me", lease_until=T0 + 30)


@pytest.mark.parametrize("lease_until", [T0, T0 + 30, None])
async def test_claim_refused_while_live_owner_holds_it(
    store: RunStore, lease_until: float | None
) -> None:
    held = make_run("r1", owner="other", lease_until=lease_until)
    await add(store, held)
    assert await store.claim("r1", "me", now=T0, lease_until=T0 + 60, dead_owners=["x"]) is None
    assert await store.get_run("r1") == held


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
async def test_claim_refused_for_terminal_run(store: RunStore, status: str) -> None:
    await add(store, make_run("r1", status=status))
    assert await store.claim("r1", "me", now=T0, lease_until=T0 + 30) is None
    assert await store.get_run("r1") == make_run("r1", status=status)


@pytest.mark.parametrize("status", ["running", "waiting", "sleeping"])
async def test_claim_accepts_every_active_status(store: RunStore, status: str) -> None:
    await add(store, make_run("r1", status=status))
    assert await store.claim("r1", "me", now=T0, lease_until=T0 + 30) is not None


async def test_claim_of_unknown_run_is_none(store: RunStore) -> None:
    assert await store.claim("missing", "me", now=T0, lease_until=T0 + 30) is None


# -- orphans / owners ---------------------------------------------------------------


async def test_orphans_are_claimable_running_runs_of_the_flows(store: RunStore) -> None:
    await add(
        store,
        make_run("free", created_at=T0 + 1),
        make_run("dead", owner="d", lease_until=T0 + 99, created_at=T0 + 2),
        make_run("expired", owner="o", lease_until=T0 - 1, created_at=T0 + 3),
        make_run("live", owner="o", lease_until=T0 + 99, created_at=T0 + 4),
        make_run("no-lease", owner="o", created_at=T0 + 5),
        make_run("done", status="completed", created_at=T0 + 6),
        make_run("other-flow", flow="other", created_at=T0 + 7),
        # Suspended runs are woken by a message or their deadline, never adopted.
        make_run("waiting", status="waiting", created_at=T0 + 8),
        make_run("sleeping", status="sleeping", wake_at=T0 - 5, created_at=T0 + 9),
    )
    found = await store.orphans(["flow"], now=T0, dead_owners=["d"])
    assert sorted(found) == ["dead", "expired", "free"]
    both = await store.orphans(["flow", "other"], now=T0)
    assert sorted(both) == ["expired", "free", "other-flow"]


async def test_orphans_limit_and_empty_flows(store: RunStore) -> None:
    await add(store, *(make_run(f"r{i}", created_at=T0 + i) for i in range(5)))
    found = await store.orphans(["flow"], now=T0, limit=2)
    assert len(found) == 2
    assert set(found) <= {f"r{i}" for i in range(5)}
    assert await store.orphans([], now=T0) == []


async def test_owners_are_distinct_holders_of_active_runs(store: RunStore) -> None:
    await add(
        store,
        make_run("1", owner="b", lease_until=T0),
        make_run("2", owner="a", lease_until=T0),
        make_run("3", owner="b", status="waiting"),
        make_run("4", owner="c", status="completed"),
        make_run("5"),
    )
    assert await store.owners() == ["a", "b"]


async def test_owners_of_empty_store(store: RunStore) -> None:
    assert await store.owners() == []


# -- renew_leases / release ---------------------------------------------------------


async def test_renew_leases_extends_every_lease_of_the_owner(store: RunStore) -> None:
    await add(
        store,
        make_run("1", owner="me", lease_until=T0),
        make_run("2", owner="me", lease_until=T0 + 5, status="sleeping"),
        make_run("3", owner="other", lease_until=T0),
    )
    assert await store.renew_leases("me", T0 + 60) == 2
    leases = {r.id: (r.owner, r.lease_until) for r in await store.list_runs()}
    assert leases == {"1": ("me", T0 + 60), "2": ("me", T0 + 60), "3": ("other", T0)}
    assert await store.renew_leases("nobody", T0 + 60) == 0


async def test_release_all_leases_of_an_owner(store: RunStore) -> None:
    await add(
        store,
        make_run("1", owner="me", lease_until=T0),
        make_run("2", owner="me", lease_until=T0),
        make_run("3", owner="other", lease_until=T0),
    )
    await store.release("me")
    leases = {r.id: (r.owner, r.lease_until) for r in await store.list_runs()}
    assert leases == {"1": (None, None), "2": (None, None), "3": ("other", T0)}


async def test_release_named_runs_only(store: RunStore) -> None:
    await add(
        store,
        make_run("1", owner="me", lease_until=T0),
        make_run("2", owner="me", lease_until=T0),
        make_run("3", owner="other", lease_until=T0),
    )
    await store.release("me", ["1", "3", "missing"])
    leases = {r.id: (r.owner, r.lease_until) for r in await store.list_runs()}
    assert leases == {"1": (None, None), "2": ("me", T0), "3": ("other", T0)}
    await store.release("me", [])
    assert (await store.get_run("2")) == make_run("2", owner="me", lease_until=T0)


# -- update_run: waits and input ------------------------------------------------------


async def test_clear_wait_sets_wait_fields_including_none(store: RunStore) -> None:
    await add(store, make_run("r1", wait=b"{}", wake_at=T0 + 5, wait_topics="a,b"))
    patch = RunPatch("r1", updated_at=T0 + 1, status="sleeping", clear_wait=True, wake_at=T0 + 9)
    updated = await store.update_run(patch)
    expected = make_run("r1", status="sleeping", updated_at=T0 + 1, wake_at=T0 + 9)
    assert updated == expected
    assert await store.get_run("r1") == expected


async def test_wait_fields_are_left_alone_without_clear_wait(store: RunStore) -> None:
    await add(store, make_run("r1", wait=b"{}", wake_at=T0 + 5, wait_topics="a"))
    patch = RunPatch("r1", updated_at=T0 + 1, wait=b"[]", wake_at=T0 + 9, wait_topics="x")
    updated = await store.update_run(patch)
    assert updated == make_run("r1", wait=b"{}", wake_at=T0 + 5, wait_topics="a", updated_at=T0 + 1)


async def test_patch_replaces_input(store: RunStore) -> None:
    await add(store, make_run("r1", input=b"1"))
    updated = await store.update_run(RunPatch("r1", updated_at=T0 + 1, input=b"2"))
    assert updated == make_run("r1", input=b"2", updated_at=T0 + 1)


# -- reset_journal ------------------------------------------------------------------------


async def test_reset_journal_drops_entries_and_patches(store: RunStore) -> None:
    await add(store, make_run("r1"), make_run("r2"))
    await store.record([make_entry("r1", 0), make_entry("r1", 1), make_entry("r2", 0)])
    patch = RunPatch("r1", updated_at=T0 + 1, input=b"next")
    assert await store.reset_journal(patch) is True
    assert await store.load_journal("r1") == []
    assert await store.load_journal("r2") == [make_entry("r2", 0)]
    # The run's next generation starts (ids derived from positions include it).
    assert await store.get_run("r1") == make_run(
        "r1", input=b"next", updated_at=T0 + 1, generation=1
    )
    assert (await store.get_run("r2")).generation == 0  # type: ignore[union-attr]
    await store.record([make_entry("r1", 0, value=b"fresh")])
    assert await store.load_journal("r1") == [make_entry("r1", 0, value=b"fresh")]


async def test_reset_journal_respects_expect(store: RunStore) -> None:
    await add(store, make_run("r1", status="completed"))
    await store.record([make_entry("r1", 0)])
    assert await store.reset_journal(RunPatch("r1", updated_at=T0 + 1)) is False
    assert await store.load_journal("r1") == [make_entry("r1", 0)]
    assert (await store.get_run("r1")).generation == 0  # type: ignore[union-attr]
    assert await store.reset_journal(RunPatch("missing", updated_at=T0 + 1)) is False


# -- mailbox ------------------------------------------------------------------------------


async def test_post_assigns_increasing_ids(store: RunStore) -> None:
    first, created = await store.post(make_message(sender="alice"))
    assert created
    assert first == make_message(id=first.id, sender="alice")
    second, _ = await store.post(make_message(topic="u"))
    assert first.id > 0
    assert second.id > first.id


async def test_message_with_key_finds_an_accepted_message_consumed_or_not(
    store: RunStore,
) -> None:
    first, _ = await store.post(make_message(key="k", payload=b"1"))
    assert await store.message_with_key("r1", "k") == first
    assert await store.consume(first.id, None, None)
    assert await store.message_with_key("r1", "k") == first  # consumed: still accepted once
    assert await store.message_with_key("r1", "other") is None
    assert await store.message_with_key("r2", "k") is None


async def test_post_with_a_seen_key_returns_the_first_message(store: RunStore) -> None:
    first, _ = await store.post(make_message(key="k", payload=b"1"))
    again, created = await store.post(make_message(key="k", payload=b"2"))
    assert (again, created) == (first, False)
    other_run, created = await store.post(make_message(run_id="r2", key="k"))
    assert created
    assert other_run.id != first.id
    assert await store.consume(first.id, None, None)
    # A key stays seen after its message was consumed: late duplicates are dropped.
    assert await store.post(make_message(key="k", payload=b"3")) == (first, False)


async def test_next_message_is_the_oldest_unconsumed_on_the_topic(store: RunStore) -> None:
    assert await store.next_message("r1", "t") is None
    a, _ = await store.post(make_message(payload=b"a"))
    await store.post(make_message(topic="other"))
    await store.post(make_message(run_id="r2"))
    b, _ = await store.post(make_message(payload=b"b"))
    assert await store.next_message("r1", "t") == a
    assert await store.consume(a.id, None, None)
    assert await store.next_message("r1", "t") == b


async def test_consume_records_and_patches_atomically(store: RunStore) -> None:
    await add(store, make_run("r1", status="waiting", wait=b"{}", wait_topics="t"))
    message, _ = await store.post(make_message())
    patch = RunPatch("r1", updated_at=T0 + 1, status="running", clear_wait=True)
    entry = make_entry("r1", 0, kind="wait", value=message.payload)
    assert await store.consume(message.id, entry, patch) is True
    assert await store.load_journal("r1") == [entry]
    assert await store.get_run("r1") == make_run("r1", updated_at=T0 + 1)
    assert await store.next_message("r1", "t") is None
    assert await store.consume(message.id, None, None) is False


async def test_consume_with_unmatched_patch_writes_nothing(store: RunStore) -> None:
    await add(store, make_run("r1", status="cancelled"))
    message, _ = await store.post(make_message())
    patch = RunPatch("r1", updated_at=T0 + 1, status="running")
    assert await store.consume(message.id, make_entry("r1", 0), patch) is False
    assert await store.next_message("r1", "t") == message
    assert await store.load_journal("r1") == []
    assert await store.get_run("r1") == make_run("r1", status="cancelled")


async def test_consume_unknown_message_is_false(store: RunStore) -> None:
    assert await store.consume(12345, None, None) is False


async def test_messages_after_lists_unconsumed_in_id_order(store: RunStore) -> None:
    posted = [(await store.post(make_message(payload=bytes([i]))))[0] for i in range(5)]
    assert await store.consume(posted[1].id, None, None)
    assert await store.messages_after(0) == [posted[0], *posted[2:]]
    assert await store.messages_after(posted[2].id) == posted[3:]
    assert await store.messages_after(0, limit=2) == [posted[0], posted[2]]
    assert await store.messages_after(posted[4].id) == []


# -- due / next_wake ----------------------------------------------------------------------


async def test_due_runs_are_suspended_unhosted_and_past_their_deadline(store: RunStore) -> None:
    await add(
        store,
        make_run("sleep", status="sleeping", wake_at=T0 - 1),
        make_run("wait", status="waiting", wake_at=T0),
        make_run("future", status="sleeping", wake_at=T0 + 1),
        make_run("no-deadline", status="waiting"),
        make_run("running", wake_at=T0 - 1),
        make_run("done", status="completed", wake_at=T0 - 1),
        make_run("hosted", status="sleeping", wake_at=T0 - 1, owner="o", lease_until=T0 + 9),
        make_run("dead", status="sleeping", wake_at=T0 - 1, owner="d", lease_until=T0 + 9),
        make_run("expired", status="sleeping", wake_at=T0 - 1, owner="o", lease_until=T0 - 1),
        make_run("other-flow", flow="other", status="sleeping", wake_at=T0 - 1),
    )
    found = await store.due(["flow"], now=T0, dead_owners=["d"])
    assert sorted(found) == ["dead", "expired", "sleep", "wait"]
    assert len(await store.due(["flow"], now=T0, limit=1)) == 1
    assert await store.due([], now=T0) == []


async def test_next_wake_is_the_earliest_unhosted_deadline(store: RunStore) -> None:
    assert await store.next_wake(["flow"], now=T0) is None
    await add(
        store,
        make_run("hosted", status="sleeping", wake_at=T0 + 1, owner="o", lease_until=T0 + 9),
        make_run("running", wake_at=T0 + 2),
        make_run("other-flow", flow="other", status="sleeping", wake_at=T0 + 3),
        make_run("later", status="waiting", wake_at=T0 + 20),
        make_run("sooner", status="sleeping", wake_at=T0 + 10),
    )
    assert await store.next_wake(["flow"], now=T0) == T0 + 10
    assert await store.next_wake(["flow", "other"], now=T0) == T0 + 3
    # Once the host's lease expired, its deadline counts again.
    assert await store.next_wake(["flow"], now=T0 + 10) == T0 + 1
    assert await store.next_wake([], now=T0) is None


# -- change_token -------------------------------------------------------------------------


async def test_change_token_moves_after_writes(store: RunStore) -> None:
    token = await store.change_token()
    assert await store.change_token() == token  # reading changes nothing
    await store.create_run(make_run("r1"))
    after_create = await store.change_token()
    assert after_create != token
    await store.post(make_message())
    assert await store.change_token() != after_create


# -- aclose -------------------------------------------------------------------------


async def test_aclose_is_idempotent_and_final(store: RunStore) -> None:
    await add(store, make_run("r1"))
    await store.aclose()
    await store.aclose()
    with pytest.raises(StorageError):
        await store.get_run("r1")
    with pytest.raises(StorageError):
        await store.create_run(make_run("r2"))
    with pytest.raises(StorageError):
        await store.record([make_entry("r1", 0)])


async def test_store_is_a_run_store(store: RunStore) -> None:
    assert isinstance(store, RunStore)
    assert "://" in store.url


# -- replay, retry, usage, metadata and lookups -------------------------------------


async def test_create_run_writes_its_journal_in_the_same_call(store: RunStore) -> None:
    entries = [make_entry("r1", 0), make_entry("r1", 1, name="other", value=b"2")]
    _, created = await store.create_run(make_run("r1"), entries)
    assert created
    assert await store.load_journal("r1") == entries
    # A second create of the same id leaves both the run and its journal alone.
    _, again = await store.create_run(make_run("r1"), [make_entry("r1", 5)])
    assert not again
    assert [e.position for e in await store.load_journal("r1")] == [0, 1]


async def test_create_run_refuses_entries_of_another_run_and_writes_nothing(
    store: RunStore,
) -> None:
    with pytest.raises(StorageError, match="r2"):
        await store.create_run(make_run("r1"), [make_entry("r2", 0)])
    assert await store.get_run("r1") is None


async def test_list_runs_pages_with_a_cursor(store: RunStore) -> None:
    await add(store, *(make_run(f"r{i}", created_at=T0 + i // 2) for i in range(7)))
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_runs(limit=3, before=cursor)
        seen += [r.id for r in page]
        if len(page) < 3:
            break
        cursor = page[-1].id
    assert seen == [r.id for r in await store.list_runs(limit=100)]
    assert len(seen) == 7
    assert await store.list_runs(before="missing") == []


async def test_find_runs_by_prefix(store: RunStore) -> None:
    await add(store, make_run("abc1"), make_run("abc2"), make_run("abd"), make_run("b"))
    assert await store.find_runs("abc") == ["abc1", "abc2"]
    assert await store.find_runs("abc", limit=1) == ["abc1"]
    assert await store.find_runs("abd") == ["abd"]
    assert await store.find_runs("abc2") == ["abc2"]
    assert await store.find_runs("x") == []


async def test_tree_usage_sums_a_run_and_the_runs_below_it(store: RunStore) -> None:
    def spent(run_id: str, tokens: int, cost: float | None, parent: str | None) -> RunRecord:
        return make_run(
            run_id, input_tokens=tokens, output_tokens=1, cost_usd=cost, parent_id=parent
        )

    await add(
        store,
        spent("p", 10, None, None),
        spent("p.1", 20, 0.5, "p"),
        spent("p.1.3", 30, 0.25, "p.1"),
        spent("p.2", 40, None, "p"),
        spent("p.9", 1000, 9.0, None),  # started by hand with a dotted id: not a child
        spent("p.9.1", 1000, 9.0, "p.9"),
        spent("px", 1000, 9.0, None),
        spent("q", 1000, 9.0, None),
    )
    assert await store.tree_usage("p") == (104, 0.75)
    assert await store.tree_usage("p.1") == (52, 0.75)
    assert await store.tree_usage("p.2") == (41, None)
    assert await store.tree_usage("nope") == (0, None)


async def test_patch_adds_usage_and_sets_metadata(store: RunStore) -> None:
    await add(store, make_run("r1"))
    patch = RunPatch("r1", updated_at=T0 + 1, add_input_tokens=10, add_output_tokens=4)
    await store.update_run(patch)
    run = await store.get_run("r1")
    assert run is not None
    assert (run.input_tokens, run.output_tokens, run.cost_usd) == (10, 4, None)
    await store.record(
        (),
        RunPatch(
            "r1",
            updated_at=T0 + 2,
            add_input_tokens=1,
            add_output_tokens=1,
            add_cost_usd=0.25,
            metadata=b'{"k": 1}',
        ),
    )
    await store.update_run(RunPatch("r1", updated_at=T0 + 3, add_cost_usd=0.5))
    run = await store.get_run("r1")
    assert run is not None
    assert (run.input_tokens, run.output_tokens, run.cost_usd) == (11, 5, 0.75)
    assert run.metadata == b'{"k": 1}'


async def test_clear_error_turns_a_failed_run_back_into_a_clean_one(store: RunStore) -> None:
    await add(store, make_run("r1", status="failed", error="E: x", error_info=b"{}"))
    patch = RunPatch(
        "r1", updated_at=T0 + 1, status="running", clear_error=True, expect=("failed",)
    )
    run = await store.update_run(patch)
    assert run is not None
    assert (run.status, run.error, run.error_info) == ("running", None, None)


async def test_journal_counts(store: RunStore) -> None:
    await add(store, make_run("a"), make_run("b"), make_run("c"))
    await store.record([make_entry("a", i) for i in range(3)] + [make_entry("b", 0)])
    counts = await store.journal_counts(["a", "b", "c", "missing"])
    assert {k: counts.get(k, 0) for k in ("a", "b", "c", "missing")} == {
        "a": 3,
        "b": 1,
        "c": 0,
        "missing": 0,
    }
    assert await store.journal_counts([]) == {}


# -- optional capabilities ------------------------------------------------------------


def lacks(store: RunStore, capability: str) -> str:
    return f"{scheme_of(store.url)} store lacks capability {capability}"


@pytest.fixture
def bulk_claims(store: RunStore) -> BulkClaims:
    """The store, if it is a BulkClaims store; skips the test otherwise."""
    if not isinstance(store, BulkClaims):
        pytest.skip(lacks(store, "BulkClaims"))
    return store


@pytest.fixture
def signals(store: RunStore) -> SignalsChanges:
    """The store, if it is a SignalsChanges store; skips the test otherwise."""
    if not isinstance(store, SignalsChanges):
        pytest.skip(lacks(store, "SignalsChanges"))
    return store


@pytest.fixture
def announces(store: RunStore) -> AnnouncesRunnable:
    """The store, if it is an AnnouncesRunnable store; skips the test otherwise."""
    if not isinstance(store, AnnouncesRunnable):
        pytest.skip(lacks(store, "AnnouncesRunnable"))
    return store


@pytest.fixture
async def other(store: RunStore) -> AsyncIterator[RunStore]:
    """A second store on the same database, as another process would open it."""
    opened = await open_store(store.url)
    try:
        yield opened
    finally:
        await opened.aclose()


NOW = T0 + 100


async def test_claim_orphans_leases_the_running_runs_nobody_live_hosts(
    bulk_claims: BulkClaims, store: RunStore
) -> None:
    claimable = [
        make_run("unowned", created_at=T0 + 1),
        make_run("dead-owner", created_at=T0 + 2, owner="dead", lease_until=NOW + 60),
        make_run("lapsed", created_at=T0 + 3, owner="slow", lease_until=NOW - 1),
        make_run("unowned-2", created_at=T0 + 4),
    ]
    others = [
        make_run("live-owner", created_at=T0 + 5, owner="alive", lease_until=NOW + 60),
        make_run("waiting", created_at=T0 + 6, status="waiting"),
        make_run("completed", created_at=T0 + 7, status="completed"),
        make_run("other-flow", created_at=T0 + 8, flow="g"),
    ]
    await add(store, *others, *reversed(claimable))
    claimed = await bulk_claims.claim_orphans(
        ["flow"], "w1", now=NOW, lease_until=NOW + 30, dead_owners=["dead"]
    )
    assert [r.id for r in claimed] == [r.id for r in claimable]  # oldest first
    for record in claimed:
        assert (record.owner, record.lease_until) == ("w1", NOW + 30)
        assert await store.get_run(record.id) == record
    for record in others:
        assert await store.get_run(record.id) == record  # untouched
    # Leased now: a second sweep, by anyone, takes nothing.
    assert await bulk_claims.claim_orphans(["flow"], "w2", now=NOW, lease_until=NOW + 30) == []
    assert await bulk_claims.claim_orphans([], "w2", now=NOW, lease_until=NOW + 30) == []


async def test_claim_due_leases_the_due_runs_nobody_live_hosts(
    bulk_claims: BulkClaims, store: RunStore
) -> None:
    due = [
        make_run("late", status="sleeping", wake_at=NOW - 10),
        make_run("dead-owner", status="waiting", wake_at=NOW - 5, owner="dead", lease_until=NOW),
        make_run("on-time", status="waiting", wake_at=NOW),
    ]
    others = [
        make_run("future", status="sleeping", wake_at=NOW + 1),
        make_run("hosted", status="sleeping", wake_at=NOW - 20, owner="w", lease_until=NOW + 60),
        make_run("no-deadline", status="waiting"),
        make_run("running", wake_at=NOW - 20),
        make_run("other-flow", flow="g", status="sleeping", wake_at=NOW - 20),
    ]
    await add(store, *others, *reversed(due))
    assert await bulk_claims.claim_due(
        ["flow"], "w1", now=NOW, lease_until=NOW + 30, dead_owners=["dead"], limit=1
    ) == [dataclasses.replace(due[0], owner="w1", lease_until=NOW + 30)]
    claimed = await bulk_claims.claim_due(
        ["flow"], "w1", now=NOW, lease_until=NOW + 30, dead_owners=["dead"]
    )
    # The rest, most overdue first (the first is hosted now, by w1).
    assert [r.id for r in claimed] == [r.id for r in due[1:]]
    for record in [*claimed, await store.get_run("late")]:
        assert record is not None
        assert (record.owner, record.lease_until) == ("w1", NOW + 30)
    for record in others:
        assert await store.get_run(record.id) == record
    assert await bulk_claims.claim_due(["flow"], "w2", now=NOW, lease_until=NOW + 30) == []
    assert await bulk_claims.claim_due([], "w2", now=NOW, lease_until=NOW + 30) == []


async def settled(signals: SignalsChanges) -> int:
    """A token that stays put: a store's first waits may report its listener coming up."""
    token = 0
    with anyio.fail_after(5):
        while (new := await signals.wait_for_change(token, 0.05)) != token:
            token = new
    return token


async def test_wait_for_change_returns_when_another_store_posts(
    signals: SignalsChanges, other: RunStore
) -> None:
    token = await settled(signals)
    await other.post(make_message())
    with anyio.fail_after(5):
        assert await signals.wait_for_change(token, 5.0) != token


async def test_deadline_token_moves_when_another_store_hands_a_deadline_over(
    signals: SignalsChanges, other: RunStore
) -> None:
    await other.create_run(
        make_run("r1", status="sleeping", wake_at=NOW, owner="w", lease_until=NOW + 60)
    )
    token = await settled(signals)
    seen = signals.deadline_token()
    await other.release("w")  # the sleeping run's deadline is anyone's now
    with anyio.fail_after(5):
        while signals.deadline_token() == seen:
            token = await signals.wait_for_change(token, 0.5)


async def test_runnable_token_moves_when_another_store_announces(
    announces: AnnouncesRunnable, store: RunStore, other: RunStore
) -> None:
    assert isinstance(other, AnnouncesRunnable)
    with anyio.fail_after(5):  # change_token moves on every call until the store listens
        while await store.change_token() != await store.change_token():
            await anyio.sleep(0.01)
    seen = announces.runnable_token()
    await other.announce_runnable()
    with anyio.fail_after(5):
        while announces.runnable_token() == seen:
            await anyio.sleep(0.01)
