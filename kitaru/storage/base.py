"""The storage contract: the run store Protocol, its optional capabilities, its records.

Records are frozen, slotted dataclasses rather than pydantic models: they sit on
the hot path of every checkpoint, and the public pydantic records
(``kitaru.RunInfo`` and friends) are built from them only when someone asks.

Values are stored as JSON bytes (``value``) or, above the inline threshold, as
a content-addressed reference into the artifact store (``ref``); the store
itself never interprets either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

__all__ = (
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "AnnouncesRunnable",
    "ArtifactStore",
    "BulkClaims",
    "JournalEntry",
    "Message",
    "RunPatch",
    "RunRecord",
    "RunStore",
    "SignalsChanges",
    "TreeRow",
    "Unhosted",
    "child_prefix_range",
    "sum_tree",
)

#: Statuses of a run that still has work to do (it can be claimed and resumed).
ACTIVE_STATUSES = ("running", "waiting", "sleeping")
#: Statuses a run never leaves on its own.
TERMINAL_STATUSES = ("completed", "failed", "cancelled")
#: The two kinds of runs nobody hosts that a worker looks for: suspended runs
#: whose deadline passed (:meth:`RunStore.due`) and running ones
#: (:meth:`RunStore.orphans`). Backends find and claim both with one routine.
Unhosted = Literal["due", "orphans"]


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One row of the runs table."""

    id: str
    flow: str
    status: str
    created_at: float
    updated_at: float
    input: bytes | None = None
    output: bytes | None = None
    output_ref: str | None = None
    error: str | None = None
    #: JSON: {"type": dotted class name, "message": str, "traceback": str}
    error_info: bytes | None = None
    owner: str | None = None
    lease_until: float | None = None
    replay_of: str | None = None
    parent_id: str | None = None
    #: JSON of the pending wait (topic, question, schema, deadline), if any.
    wait: bytes | None = None
    #: Next time the timer service must look at this run (sleep end, wait timeout).
    wake_at: float | None = None
    #: Comma-separated topics of the pending waits (what a message must match to wake it).
    wait_topics: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    #: JSON object set by ``kitaru.log`` outside a checkpoint.
    metadata: bytes | None = None
    #: JSON of the run's own budget (``rt.start(..., budget=...)``): {"tokens", "cost_usd"}.
    budget: bytes | None = None
    #: How many times ``continue_as_new`` started the run's journal afresh
    #: (``reset_journal`` adds one); ids derived from journal positions include it.
    generation: int = 0


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One durable call of a run, recorded once it finished."""

    run_id: str
    position: int
    name: str
    kind: str
    status: str
    attempts: int
    started_at: float
    duration_s: float | None
    value: bytes | None = None
    ref: str | None = None
    #: JSON: {"type", "message", "traceback", "attempts": [{"type", "message"}...]}
    error: bytes | None = None
    #: JSON object of ``kitaru.log`` metadata and usage.
    metadata: bytes | None = None


@dataclass(frozen=True, slots=True)
class RunPatch:
    """A change to one run, applied only if the run's status is in ``expect``.

    Fields left as ``None`` are not changed; ``release`` clears the owner and
    lease so another worker may claim the run at once.
    """

    run_id: str
    updated_at: float
    status: str | None = None
    output: bytes | None = None
    output_ref: str | None = None
    error: str | None = None
    error_info: bytes | None = None
    release: bool = False
    expect: tuple[str, ...] = ACTIVE_STATUSES
    #: With ``clear_wait``, ``wait``, ``wake_at`` and ``wait_topics`` are set to
    #: these values, ``None`` included; without it they are left alone.
    clear_wait: bool = False
    wait: bytes | None = None
    wake_at: float | None = None
    wait_topics: str | None = None
    #: Replace the run's input (``continue_as_new``).
    input: bytes | None = None
    #: Set ``error`` and ``error_info`` to NULL (a retried run is no longer failed).
    clear_error: bool = False
    #: Replace the run's ``kitaru.log`` metadata (a JSON object).
    metadata: bytes | None = None
    #: Added to the run's usage totals (LLM calls recorded with this patch).
    add_input_tokens: int = 0
    add_output_tokens: int = 0
    #: Added to the run's cost; ``None`` adds nothing (the cost is unknown).
    add_cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """One message in a run's mailbox; ``id`` orders messages (0 before it is stored)."""

    id: int
    run_id: str
    topic: str
    payload: bytes
    created_at: float
    sender: str | None = None
    #: Idempotency key: a second message with the same key for the run is dropped.
    key: str | None = None


@runtime_checkable
class RunStore(Protocol):
    """Durable home of runs and their journals.

    Every method is a coroutine; every mutation is atomic and durable when it
    returns. Backends translate their driver's errors into
    :class:`kitaru.StorageError` (with the URL's password redacted).
    """

    url: str

    async def create_run(
        self, run: RunRecord, journal: Sequence[JournalEntry] = ()
    ) -> tuple[RunRecord, bool]:
        """Insert ``run`` (with ``journal``, in the same transaction) unless its id exists.

        Returns the stored record and whether it was created by this call; an
        existing run is returned unchanged and ``journal`` is not written.
        """
        ...

    async def get_run(self, run_id: str) -> RunRecord | None:
        """Return the run, or ``None`` if there is no such run."""
        ...

    async def list_runs(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> list[RunRecord]:
        """Runs matching the filters, newest first.

        ``before`` is a run id (the last one of the previous page): only runs
        older than it are returned, so pages stay stable while runs are added.
        """
        ...

    async def journal_counts(self, run_ids: Sequence[str]) -> dict[str, int]:
        """How many journal entries each of ``run_ids`` has (runs without any: 0 or absent)."""
        ...

    async def find_runs(self, prefix: str, limit: int = 2) -> list[str]:
        """Ids of runs whose id starts with ``prefix``, in id order (at most ``limit``)."""
        ...

    async def tree_usage(self, run_id: str) -> tuple[int, float | None]:
        """Tokens (input plus output) and cost spent by the run and every run below it.

        Below it: its child flows' runs, theirs, and so on (``parent_id``
        links). The cost is ``None`` when no run of the tree has a known cost;
        an unknown run spent ``(0, None)``.
        """
        ...

    async def load_journal(self, run_id: str) -> list[JournalEntry]:
        """The run's journal ordered by position."""
        ...

    async def record(self, entries: Sequence[JournalEntry], patch: RunPatch | None = None) -> bool:
        """Atomically write journal entries and optionally patch their run.

        An entry never replaces a ``completed`` entry at the same position (a
        committed result is final). Returns ``False`` (and writes nothing) when
        ``patch`` is given and the run's status is not in ``patch.expect``.
        """
        ...

    async def update_run(self, patch: RunPatch) -> RunRecord | None:
        """Apply ``patch`` if the run's status is in ``patch.expect``.

        Returns the updated record, or ``None`` if the run does not exist or
        its status did not match.
        """
        ...

    async def claim(
        self,
        run_id: str,
        owner: str,
        *,
        now: float,
        lease_until: float,
        dead_owners: Sequence[str] = (),
    ) -> RunRecord | None:
        """Take the lease of an active run that nobody live holds.

        A run can be claimed when it is active and its owner is empty, is
        ``owner`` already, is in ``dead_owners`` or its lease expired before
        ``now``. Returns the claimed record, else ``None``.
        """
        ...

    async def orphans(
        self,
        flows: Sequence[str],
        *,
        now: float,
        dead_owners: Sequence[str] = (),
        limit: int = 1000,
    ) -> list[str]:
        """Ids of ``running`` runs of ``flows`` that could be claimed right now.

        Suspended runs are not orphans: a message or their deadline wakes them.
        """
        ...

    async def post(self, message: Message) -> tuple[Message, bool]:
        """Put ``message`` in its run's mailbox (its ``id`` is assigned here).

        If ``message.key`` is set and a message with that key exists for the
        run, nothing is stored and ``(existing, False)`` is returned.
        """
        ...

    async def next_message(self, run_id: str, topic: str) -> Message | None:
        """The oldest unconsumed message of ``run_id`` on ``topic``."""
        ...

    async def message_with_key(self, run_id: str, key: str) -> Message | None:
        """The message ``run_id`` accepted with idempotency ``key``, consumed or not."""
        ...

    async def consume(
        self, message_id: int, entry: JournalEntry | None, patch: RunPatch | None
    ) -> bool:
        """Atomically mark a message consumed, record ``entry`` and apply ``patch``.

        Returns ``False`` (writing nothing) if the message was consumed already
        or the patch's status expectation does not hold.
        """
        ...

    async def messages_after(self, after_id: int, limit: int = 1000) -> list[Message]:
        """Unconsumed messages with an id above ``after_id``, oldest first."""
        ...

    async def due(
        self,
        flows: Sequence[str],
        *,
        now: float,
        dead_owners: Sequence[str] = (),
        limit: int = 1000,
    ) -> list[str]:
        """Suspended runs of ``flows`` nobody live hosts whose ``wake_at`` has passed."""
        ...

    async def next_wake(self, flows: Sequence[str], *, now: float) -> float | None:
        """The earliest ``wake_at`` among suspended runs of ``flows`` nobody hosts.

        Nobody hosts a run whose owner is empty or whose lease expired before ``now``.
        """
        ...

    async def reset_journal(self, patch: RunPatch) -> bool:
        """Delete the run's journal and apply ``patch`` (``continue_as_new``)."""
        ...

    async def change_token(self) -> int:
        """A number that changes whenever any writer (any process) committed.

        Lets a poller skip its query when nothing happened; cheap to call.
        """
        ...

    async def owners(self) -> list[str]:
        """Distinct owners currently holding the lease of an active run."""
        ...

    async def renew_leases(self, owner: str, lease_until: float) -> int:
        """Extend every lease ``owner`` holds; returns how many."""
        ...

    async def release(self, owner: str, run_ids: Sequence[str] | None = None) -> None:
        """Give up ``owner``'s leases (all of them when ``run_ids`` is ``None``)."""
        ...

    async def aclose(self) -> None:
        """Release connections; the store cannot be used afterwards."""
        ...


# -- optional capabilities ---------------------------------------------------------------
#
# A backend may do more than RunStore asks. Each extra is a Protocol of its
# own, which the runtime checks with isinstance; a store without it gets the
# portable path built on RunStore's methods alone.


@runtime_checkable
class BulkClaims(Protocol):
    """Find and lease many unhosted runs in one call.

    With it, the runtime's sweep for runs nobody hosts and its timer service
    call :meth:`claim_orphans` and :meth:`claim_due`: one statement each, and
    workers polling together split the runs between them instead of racing
    for the same ones. Without it, the runtime lists the candidates with
    :meth:`RunStore.orphans` or :meth:`RunStore.due` and claims them one by one
    with :meth:`RunStore.claim` (a claim another worker won returns ``None``).
    """

    async def claim_due(
        self,
        flows: Sequence[str],
        owner: str,
        *,
        now: float,
        lease_until: float,
        dead_owners: Sequence[str] = (),
        limit: int = 1000,
    ) -> list[RunRecord]:
        """Lease to ``owner`` the runs :meth:`RunStore.due` would list, most overdue first.

        Runs another worker is claiming at the same moment are skipped, not
        waited for. Returns the claimed records (owner and lease set).
        """
        ...

    async def claim_orphans(
        self,
        flows: Sequence[str],
        owner: str,
        *,
        now: float,
        lease_until: float,
        dead_owners: Sequence[str] = (),
        limit: int = 1000,
    ) -> list[RunRecord]:
        """Lease to ``owner`` the runs :meth:`RunStore.orphans` would list, oldest first.

        Runs another worker is claiming at the same moment are skipped, not
        waited for. Returns the claimed records (owner and lease set).
        """
        ...


@runtime_checkable
class SignalsChanges(Protocol):
    """Wake a waiting poller as soon as another process commits something it acts on.

    With it, the runtime's wake service blocks in :meth:`wait_for_change`
    (PostgreSQL: a LISTEN connection) and fetches new messages only when it
    returns a new token; and when :meth:`deadline_token` moves (another process
    left a suspended run with a deadline unhosted) it kicks the timer service
    at once. Without it, the wake service asks :meth:`RunStore.change_token`
    every ``poll_interval`` and the timer service finds handed-over deadlines
    on its next rescan.
    """

    async def wait_for_change(self, token: int, max_wait: float) -> int:
        """Wait for a change after ``token``; return the new token.

        ``token`` is a value this method returned before (start with 0). It
        returns a new token as soon as another process signals a change,
        else ``token`` itself after ``max_wait`` seconds.
        """
        ...

    def deadline_token(self) -> int:
        """A number that moves when another process handed over a suspended run's deadline."""
        ...


@runtime_checkable
class AnnouncesRunnable(Protocol):
    """Tell the workers of other processes that a run waits for any of them.

    With it, a runtime that stores a run it does not host itself (a submitted
    run, a retry or replay of a flow it does not host) calls
    :meth:`announce_runnable`, and the wake service of every other process
    kicks its sweep when :meth:`runnable_token` moves, so the run starts at
    once. Without it, the run waits for a worker's periodic sweep (every
    second).
    """

    async def announce_runnable(self) -> None:
        """Signal the other processes' runtimes that a run waits for a worker."""
        ...

    def runnable_token(self) -> int:
        """A number that moves when another process announced a runnable run."""
        ...


@runtime_checkable
class ArtifactStore(Protocol):
    """Content-addressed blobs: large checkpoint values and saved artifacts."""

    url: str

    async def put(self, data: bytes) -> str:
        """Store ``data`` and return its reference (stable for equal content)."""
        ...

    async def get(self, ref: str) -> bytes:
        """Return the bytes stored under ``ref``."""
        ...

    async def aclose(self) -> None:
        """Release the filesystem."""
        ...


#: ``(id, parent_id, input_tokens + output_tokens, cost_usd)`` of one run.
TreeRow = tuple[str, str | None, int, float | None]


def child_prefix_range(run_id: str) -> tuple[str, str]:
    """Bounds ``[low, high)`` of the ids that start with ``run_id + "."``.

    A child flow's run id is its parent's id, a dot and a position, so a
    run's whole tree lies in this range of the primary key (plus the run).
    """
    return f"{run_id}.", f"{run_id}/"  # "/" follows "." in every collation kitaru uses


def sum_tree(run_id: str, rows: Iterable[TreeRow]) -> tuple[int, float | None]:
    """What :meth:`RunStore.tree_usage` returns, from the rows of the run's id range.

    The range can hold runs that merely look like descendants (a run started
    with the id ``"a.1"`` by hand); only those linked by ``parent_id`` count.
    """
    frontier: list[TreeRow] = []
    children: dict[str, list[TreeRow]] = {}
    for row in rows:
        if row[0] == run_id:
            frontier.append(row)
        elif row[1] is not None:
            children.setdefault(row[1], []).append(row)
    tokens = 0
    cost: float | None = None
    while frontier:
        row = frontier.pop()
        tokens += row[2]
        if row[3] is not None:
            cost = row[3] if cost is None else cost + row[3]
        frontier.extend(children.pop(row[0], ()))
    return tokens, cost
