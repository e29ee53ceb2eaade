"""Waits, sleeps and sends: the durable calls that suspend a flow or address another.

A suspended flow stays resident for ``idle_grace`` seconds (hot agent-to-agent
ping-pong never pays for a replay), then is evicted: it raises
:class:`Evicted` out of the flow, its task ends and only its rows remain. A
message, an expired deadline, a cancel or a replay rehydrates it by re-executing
the flow against its journal.

The store is the truth; the actor's ``wake`` event is only a hint that it may
have changed (a message was posted, a deadline passed, eviction was asked for).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import InvalidMessage, WaitTimeout
from .._execution import Execution, error_record, rebuild_error
from ..storage.base import Message, RunPatch, RunRecord
from ..storage.serde import Codec, dumps_plain, loads_plain

if TYPE_CHECKING:
    from ._flow_actor import FlowActor

log = logging.getLogger("kitaru.mailbox")

__all__ = (
    "Evicted",
    "Received",
    "check_against_wait",
    "durable_send",
    "durable_sleep",
    "durable_wait",
    "wait_info",
)


class Evicted(BaseException):
    """Unwinds an idle flow so its task can end; never reaches user code's ``except Exception``.

    A flow that catches ``BaseException`` and carries on is detected (every
    further durable call raises this again, and its result is discarded).
    """


class Received:
    """A message as a wait returns it: the value and who sent it."""

    __slots__ = ("id", "sender", "topic", "value")

    def __init__(self, value: Any, *, topic: str, sender: str | None, id: int | None) -> None:
        self.value = value
        self.topic = topic
        self.sender = sender
        self.id = id


def _check_live(execution: Execution) -> FlowActor:
    actor = execution.actor
    if execution.evicted:
        raise Evicted
    assert actor is not None
    return actor


async def durable_wait(
    execution: Execution,
    position: int,
    *,
    topic: str,
    codec: Codec,
    question: str | None,
    timeout_s: float | None,
) -> Received:
    """Return the next message on ``topic`` (consuming it exactly once)."""
    entry = execution.recorded(position, topic, "wait")
    what = f"wait on topic {topic!r} (run {execution.run_id}, position {position})"
    if entry is not None:
        if entry.status != "completed":
            raise rebuild_error(topic, entry.error)
        meta = loads_plain(entry.metadata) or {}
        value = await execution.load(entry, codec, what)
        return Received(value, topic=topic, sender=meta.get("sender"), id=meta.get("message_id"))
    actor = _check_live(execution)
    runtime = execution.runtime
    store = runtime.store
    started = runtime.clock.now()
    deadline = execution.prior_deadline(position)
    if deadline is None and timeout_s is not None:
        deadline = started + timeout_s
    registered = False
    while True:
        actor.wake = anyio.Event()  # before the look, so a send in between is not missed
        message = await store.next_message(execution.run_id, topic)
        if message is not None:
            accepted = await _consume(execution, position, topic, codec, message, what, started)
            if accepted is not None:
                return accepted
            continue
        now = runtime.clock.now()
        if deadline is not None and now >= deadline:
            await _commit_timeout(execution, position, topic, started, deadline)
        if not registered:
            await execution.suspend(
                position,
                {
                    "kind": "wait",
                    "position": position,
                    "topic": topic,
                    "question": question,
                    "schema": codec.json_schema(),
                    "deadline": deadline,
                },
            )
            registered = True
        await _idle(execution, actor, deadline)


async def _consume(
    execution: Execution,
    position: int,
    topic: str,
    codec: Codec,
    message: Message,
    what: str,
    started: float,
) -> Received | None:
    store = execution.runtime.store
    try:
        value = codec.load(message.payload, what=what)
    except Exception as exc:
        log.warning(
            "run %s: message %s on topic %r does not fit the wait (%s); set aside",
            execution.run_id,
            message.id,
            topic,
            exc,
        )
        await store.consume(message.id, None, None)
        return None
    metadata: dict[str, Any] = {"message_id": message.id}
    if message.sender is not None:
        metadata["sender"] = message.sender
    entry = execution.entry(
        position,
        topic,
        "wait",
        started_at=started,
        value=message.payload,
        metadata=metadata,
    )
    if not await store.consume(message.id, entry, execution.resume_patch(position)):
        return None  # consumed by someone else in between: look again
    execution.journal[position] = entry
    execution.runtime.events.touch(execution.run_id)
    return Received(value, topic=topic, sender=message.sender, id=message.id)


async def _commit_timeout(
    execution: Execution, position: int, topic: str, started: float, deadline: float
) -> None:
    exc = WaitTimeout(
        f"run {execution.run_id}: no message on topic {topic!r} before the wait's deadline "
        f"({time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(deadline))} UTC)"
    )
    await execution.commit(
        execution.entry(position, topic, "wait", started_at=started, error=error_record(exc)),
        execution.resume_patch(position),
    )
    raise exc


async def durable_sleep(execution: Execution, position: int, seconds: float) -> None:
    """Suspend until a wall-clock deadline that survives restarts."""
    if execution.recorded(position, "sleep", "sleep") is not None:
        return
    actor = _check_live(execution)
    runtime = execution.runtime
    started = runtime.clock.now()
    deadline = execution.prior_deadline(position)
    if deadline is None:
        deadline = started + seconds
    registered = False
    while True:
        actor.wake = anyio.Event()
        if runtime.clock.now() >= deadline:
            break
        if not registered:
            await execution.suspend(
                position, {"kind": "sleep", "position": position, "deadline": deadline}
            )
            registered = True
        await _idle(execution, actor, deadline)
    await execution.commit(
        execution.entry(position, "sleep", "sleep", started_at=started),
        execution.resume_patch(position),
    )


async def durable_send(
    execution: Execution, position: int, run_id: str, value: Any, topic: str
) -> int | None:
    """Send once across replays: the message key is the sender's run and position."""
    entry = execution.recorded(position, topic, "send")
    if entry is not None:
        return (loads_plain(entry.metadata) or {}).get("message_id")
    started = time.time()
    message_id = await execution.runtime.send(
        run_id,
        value,
        topic=topic,
        key=f"{execution.run_id}/{position}",
        sender=execution.run_id,
    )
    await execution.commit(
        execution.entry(
            position,
            topic,
            "send",
            started_at=started,
            metadata={"to": run_id, "message_id": message_id},
        )
    )
    return message_id


async def _idle(execution: Execution, actor: FlowActor, deadline: float | None) -> None:
    """Wait for a wake-up; past the idle grace with nothing running, evict."""
    runtime = execution.runtime
    grace = runtime.config.idle_grace
    target = math.inf if deadline is None else deadline
    async with actor.suspended():
        while True:
            with anyio.move_on_after(grace):
                await runtime.clock.sleep_until(target, actor.wake)
            woken = actor.wake.is_set() or runtime.clock.now() >= target
            if woken and not actor.evict_requested:
                return
            if execution.busy == 0 or actor.evict_requested:
                break
            actor.wake = anyio.Event()  # a checkpoint still runs beside us: stay
    execution.evicted = True
    execution.closed = True
    actor.wake.set()  # let sibling waits of the same flow unwind too
    raise Evicted


def wait_info(data: bytes | None) -> dict[str, Any] | None:
    """The first pending wait (kind ``wait``) of a run's suspension list."""
    if data is None:
        return None
    for item in json.loads(data):
        if item.get("kind") == "wait":
            return dict(item)
    return None


def suspension_patch(run_id: str, suspensions: dict[int, dict[str, Any]], now: float) -> RunPatch:
    """The run-row change that records the current set of suspensions."""
    if not suspensions:
        return RunPatch(run_id, updated_at=now, status="running", clear_wait=True)
    items = [suspensions[p] for p in sorted(suspensions)]
    waits = [i for i in items if i["kind"] == "wait"]
    deadlines = [i["deadline"] for i in items if i.get("deadline") is not None]
    return RunPatch(
        run_id,
        updated_at=now,
        status="waiting" if waits else "sleeping",
        wait=dumps_plain(items),
        wake_at=min(deadlines) if deadlines else None,
        wait_topics=",".join(sorted({i["topic"] for i in waits})) or None,
        clear_wait=True,
    )


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    # pydantic produced the schema, so it is valid: skip check_schema per message.
    return jsonschema.validators.validator_for(schema)(schema)


def check_against_wait(record: RunRecord, topic: str, payload: bytes) -> None:
    """Reject a message that cannot satisfy the run's pending wait on ``topic``."""
    info = wait_info(record.wait)
    if info is None or info.get("topic") != topic or not info.get("schema"):
        return
    schema_json = json.dumps(info["schema"], sort_keys=True)
    error = next(iter(_validator(schema_json).iter_errors(json.loads(payload))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the value"
        raise InvalidMessage(
            f"message for run {record.id} does not fit its wait on topic {topic!r}: "
            f"{where}: {error.message}. Expected JSON Schema: {schema_json}"
        )
