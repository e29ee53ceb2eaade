"""The one routine behind every durable call: replay the recorded entry, or run it and commit it.

Checkpoints, ``kitaru.llm``, waits, sleeps, sends, saves, child flows and the
adapters' tool calls all go through :func:`durable`. It:

1. looks the call's position up in the journal (a recorded call of another
   name or kind is a :class:`kitaru.NonDeterminismError`);
2. returns a completed entry's value, or raises a failed entry's exception
   again; an entry ``rt.retry`` marked runs again, keeping its attempts and errors;
3. otherwise runs the call's live part, which fills in a :class:`Call`;
4. commits the entry (value inline or in the artifact store, metadata, the
   errors of failed attempts) with its run change (usage, a suspension
   ending) in one transaction, and only then returns.

A new durable primitive is one small function on top of it: a live part and,
if its recorded value is not simply decoded, a replay part.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._budget import usage_patch
from ._failures import RETRY, describe_error, error_record, rebuild_error, retry_history

if TYPE_CHECKING:
    from ..storage.base import JournalEntry, RunPatch
    from ..storage.serde import Codec
    from ._execution import Execution

__all__ = ("Call", "durable")

T = TypeVar("T")


class Call:
    """One durable call running live: what its live part reports for the journal entry."""

    __slots__ = (
        "committed",
        "data",
        "errors",
        "execution",
        "failure_details",
        "kind",
        "label",
        "metadata",
        "name",
        "patch",
        "position",
        "prior",
        "records_failures",
        "ref",
        "started",
        "tries",
    )

    def __init__(
        self,
        execution: Execution,
        position: int,
        name: str,
        kind: str,
        label: str,
        prior: int,
        errors: list[str],
        records_failures: bool,
    ) -> None:
        # Positional parameters: one Call is made per durable call, and
        # keyword-only ones cost more than the rest of its construction.
        self.execution = execution
        self.position = position
        self.name = name
        self.kind = kind
        self.label = label
        self.started = time.time()
        #: Attempts of earlier activations (a run ``rt.retry`` resumed).
        self.prior = prior
        #: Attempts made by this activation; the entry records ``prior + tries``.
        self.tries = 1
        #: Errors of failed attempts, oldest first (earlier activations' included).
        self.errors = errors
        #: The entry's metadata; ``"errors"`` is added from :attr:`errors`.
        self.metadata: dict[str, Any] = {}
        #: The value to record, as JSON (stored inline or in the artifact store).
        self.data: bytes | None = None
        #: A value already in the artifact store (``kitaru.save``).
        self.ref: str | None = None
        #: The run change committed with the entry; by default the usage in
        #: ``metadata["usage"]`` is added to the run's totals.
        self.patch: RunPatch | None = None
        #: Set by a live part that committed its entry itself (a wait consumes
        #: its message and records the entry in one transaction).
        self.committed = False
        #: Whether any exception of the live part is the call's recorded outcome
        #: (checkpoints, LLM calls; their failures list the errors of every
        #: attempt); otherwise only :meth:`fail` records one.
        self.records_failures = records_failures
        #: Extra fields for a failure's error record (litellm's exception arguments).
        self.failure_details: Callable[[BaseException], dict[str, Any]] | None = None

    def what(self) -> str:
        """Names the call in errors: ``checkpoint 'fetch' (run r1, position 3)``."""
        return _what(self.label, self.execution.run_id, self.position)

    async def fail(self, exc: BaseException) -> None:
        """Commit the entry as failed with ``exc``: a replay raises it again."""
        if self.records_failures:
            description = describe_error(exc)
            if not self.errors or self.errors[-1] != description:
                self.errors.append(description)
            self.metadata["errors"] = self.errors
        record = error_record(exc, self.errors if self.records_failures else None)
        if self.failure_details is not None:
            record.update(self.failure_details(exc))
        await self.execution.commit(self._entry(None, None, record), self._run_patch())
        self.committed = True

    def _entry(
        self, value: bytes | None, ref: str | None, error: dict[str, Any] | None
    ) -> JournalEntry:
        return self.execution.entry(
            self.position,
            self.name,
            self.kind,
            started_at=self.started,
            attempts=self.prior + self.tries,
            value=value,
            ref=ref,
            error=error,
            metadata=self.metadata,
        )

    def _run_patch(self) -> RunPatch | None:
        # A suspension ending, else the usage the entry records (if any).
        if self.patch is not None:
            return self.patch
        usage = self.metadata.get("usage")
        return None if usage is None else usage_patch(self.execution.run_id, usage)


def _raise_recorded(entry: JournalEntry) -> BaseException:
    return rebuild_error(entry.name, entry.error)


async def durable(
    execution: Execution,
    position: int,
    name: str,
    kind: str,
    live: Callable[..., Awaitable[T]],
    *,
    live_args: tuple[Any, ...] = (),
    codec: Codec | None = None,
    replay: Callable[[JournalEntry], Awaitable[T]] | None = None,
    recorded_failure: Callable[[JournalEntry], BaseException] = _raise_recorded,
    records_failures: bool = False,
    label: str | None = None,
) -> T:
    """Replay the durable call at ``position``, or run ``live`` and commit it.

    Args:
        execution: the run's activation.
        position: the call's journal position (taken when it was called).
        name: the recorded name (a checkpoint's name, a wait's topic...).
        kind: the entry kind (``checkpoint``, ``llm``, ``wait``, ``send``...).
        live: runs the call: ``live(call, *live_args)`` fills in the
            :class:`Call` (value, metadata, usage) and returns what the caller gets.
        live_args: more arguments for ``live`` (a bound method with its
            arguments costs less than a closure on every call).
        codec: decodes a completed entry's value on replay (unless ``replay``).
        replay: builds the replayed result from a completed entry instead.
        recorded_failure: the exception a failed entry raises again on replay.
        records_failures: any ``Exception`` of ``live`` is recorded as the
            call's outcome (checkpoint bodies, LLM calls); otherwise only what
            ``live`` records with :meth:`Call.fail` is.
        label: how errors name the call (default ``"{kind} '{name}'"``).
    """
    label = label or f"{kind} {name!r}"
    entry = execution.recorded(position, name, kind)
    prior = 0
    errors: list[str] = []
    if entry is not None:
        if entry.status == "completed":
            if replay is not None:
                return await replay(entry)
            assert codec is not None, "a durable call needs a codec or a replay function"
            value: T = await execution.load(
                entry, codec, lambda: _what(label, execution.run_id, position)
            )
            return value
        if entry.status != RETRY:
            raise recorded_failure(entry)
        prior, errors = retry_history(entry)
    call = Call(execution, position, name, kind, label, prior, errors, records_failures)
    try:
        result = await live(call, *live_args)
    except Exception as exc:
        if call.records_failures and not call.committed:
            await call.fail(exc)
        raise
    if not call.committed:
        # Commit the completed entry (small values stay inline without the
        # store_value coroutine: this is every checkpoint's path).
        inline, ref = call.data, call.ref
        if inline is not None and len(inline) > execution.host.config.inline_threshold:
            inline, ref = await execution.store_value(inline)
        if errors:
            call.metadata["errors"] = errors
        await execution.commit(call._entry(inline, ref, None), call._run_patch())
    return result


def _what(label: str, run_id: str, position: int) -> str:
    return f"{label} (run {run_id}, position {position})"
