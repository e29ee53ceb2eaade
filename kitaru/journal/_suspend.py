"""The durable halves of waits, sleeps and sends: the calls that suspend a flow or address another.

A suspended flow stays resident for ``idle_grace`` seconds (hot agent-to-agent
ping-pong never pays for a replay), then is evicted: it raises
:class:`EvictionSignal` out of the flow, its task ends and only its rows
remain. A message, an expired deadline, a cancel or a replay rehydrates it by
re-executing the flow against its journal.

The store is the truth; the activation's ``wake`` event is only a hint that
it may have changed (a message was posted, a deadline passed, eviction was
asked for).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import InvalidMessage, RunFinished, RunNotFound, WaitTimeout
from ..storage.serde import loads_plain
from ._durable import Call, durable
from ._execution import wait_info
from ._signals import EvictionSignal

if TYPE_CHECKING:
    from ..storage.base import JournalEntry, Message, RunRecord
    from ..storage.serde import Codec
    from ._execution import Execution
    from ._host import Activation

log = logging.getLogger("kitaru.mailbox")

__all__ = (
    "Received",
    "check_against_wait",
    "durable_send",
    "durable_sleep",
    "durable_wait",
)


class Received:
    """A message as a wait returns it: the value and who sent it."""

    __slots__ = ("id", "sender", "topic", "value")

    def __init__(self, value: Any, *, topic: str, sender: str | None, id: int | None) -> None:
        self.value = value
        self.topic = topic
        self.sender = sender
        self.id = id


def _check_live(execution: Execution) -> Activation:
    activation = execution.activation
    if execution.evicted:
        raise EvictionSignal
    assert activation is not None, "a suspending call needs a live activation"
    return activation


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
    label = f"wait on topic {topic!r}"

    async def replay(entry: JournalEntry) -> Received:
        meta = loads_plain(entry.metadata) or {}
        value = await execution.load(
            entry, codec, f"{label} (run {execution.run_id}, position {position})"
        )
        return Received(value, topic=topic, sender=meta.get("sender"), id=meta.get("message_id"))

    async def live(call: Call) -> Received:
        activation = _check_live(execution)
        host = execution.host
        store = host.store
        call.started = started = host.clock.now()
        deadline = execution.prior_deadline(position)
        if deadline is None and timeout_s is not None:
            deadline = started + timeout_s
        registered = False
        while True:
            # A fresh event before the look, so a send in between is not missed.
            activation.wake = anyio.Event()
            message = await store.next_message(execution.run_id, topic)
            if message is not None:
                accepted = await _consume(call, codec, message)
                if accepted is not None:
                    return accepted
                continue
            now = host.clock.now()
            if deadline is not None and now >= deadline:
                exc = WaitTimeout(
                    f"run {execution.run_id}: no message on topic {topic!r} before the wait's "
                    f"deadline ({time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(deadline))} UTC)"
                )
                call.patch = execution.resume_patch(position)
                await call.fail(exc)
                raise exc
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
            await _idle(execution, activation, deadline)

    return await durable(execution, position, topic, "wait", live, replay=replay, label=label)


async def _consume(call: Call, codec: Codec, message: Message) -> Received | None:
    """Consume ``message``, recording the wait's entry in the same transaction.

    Returns ``None`` when the message is not this wait's after all.
    """
    execution = call.execution
    store = execution.host.store
    topic = call.name
    try:
        value = codec.load(message.payload, what=call.what)
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
        call.position,
        topic,
        "wait",
        started_at=call.started,
        value=message.payload,
        metadata=metadata,
    )
    if not await store.consume(message.id, entry, execution.resume_patch(call.position)):
        return None  # consumed by someone else in between: look again
    execution.journal[call.position] = entry
    execution.host.touch(execution.run_id)
    call.committed = True
    return Received(value, topic=topic, sender=message.sender, id=message.id)


async def durable_sleep(execution: Execution, position: int, seconds: float) -> None:
    """Suspend until a wall-clock deadline that survives restarts."""

    async def replay(entry: JournalEntry) -> None:
        return None

    async def live(call: Call) -> None:
        activation = _check_live(execution)
        clock = execution.host.clock
        call.started = started = clock.now()
        deadline = execution.prior_deadline(position)
        if deadline is None:
            deadline = started + seconds
        registered = False
        while True:
            activation.wake = anyio.Event()
            if clock.now() >= deadline:
                break
            if not registered:
                await execution.suspend(
                    position, {"kind": "sleep", "position": position, "deadline": deadline}
                )
                registered = True
            await _idle(execution, activation, deadline)
        call.patch = execution.resume_patch(position)

    await durable(execution, position, "sleep", "sleep", live, replay=replay)


async def durable_send(
    execution: Execution, position: int, run_id: str, value: Any, topic: str
) -> int | None:
    """Send once across replays: the message key is the sender's run and position."""

    async def replay(entry: JournalEntry) -> int | None:
        message_id: int | None = (loads_plain(entry.metadata) or {}).get("message_id")
        return message_id

    async def live(call: Call) -> int | None:
        call.metadata = {"to": run_id}
        try:
            message_id = await execution.host.send(
                run_id,
                value,
                topic=topic,
                key=f"{execution.run_id}/{execution.call_id(position)}",
                sender=execution.run_id,
            )
        except (RunNotFound, RunFinished, InvalidMessage) as exc:
            # The send's outcome: a replay raises it again instead of sending
            # for real (the peer may exist by then, and the flow would take
            # another path than the one it took).
            await call.fail(exc)
            raise
        call.metadata = {"to": run_id, "message_id": message_id}
        return message_id

    return await durable(execution, position, topic, "send", live, replay=replay)


async def _idle(execution: Execution, activation: Activation, deadline: float | None) -> None:
    """Wait for a wake-up; past the idle grace with nothing running, evict."""
    host = execution.host
    grace = host.config.idle_grace
    target = math.inf if deadline is None else deadline
    async with activation.suspended():
        while True:
            with anyio.move_on_after(grace):
                await host.clock.sleep_until(target, activation.wake)
            woken = activation.wake.is_set() or host.clock.now() >= target
            if woken and not activation.evict_requested:
                return
            if execution.busy == 0 or activation.evict_requested:
                break
            activation.wake = anyio.Event()  # a checkpoint still runs beside us: stay
    execution.evicted = True
    execution.closed = True
    activation.wake.set()  # let sibling waits of the same flow unwind too
    raise EvictionSignal


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
