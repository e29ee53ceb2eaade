"""Run events for live views (the HTTP API's server-sent events): derived from the store.

The store is the truth, so events are *derived* from it rather than pushed by
the code that changes a run: a watcher reads the run row, then its journal,
and compares them with what its client has seen. The result is one event
stream whatever process executes the run, and events that can be replayed
from the store after a reconnect.

What wakes a watcher:

- ``rt.events.touch`` (the runtime's event bus), a hook the runtime calls after it changed a run
  here (a checkpoint committed, a wait registered or answered, a status
  change). It costs one attribute test while nobody watches.
- The store's :meth:`~kitaru.storage.base.RunStore.change_token`, polled at
  most once per interval for every watcher together, for runs changed by
  other processes (a worker, the ``kitaru`` command).

Event types: ``checkpoint`` (a journal entry finished: checkpoint, llm call,
send, sleep, child flow, failed attempt), ``message`` (a wait consumed its
message), ``wait`` (a new pending wait: question and JSON Schema) and
``status`` (the run's status differs from the one the client saw last;
transient statuses between two looks can be folded into one event).
Checkpoint, message and wait events are never lost.

Event ids are cursors: each one encodes what the client has seen once it
received that event (the last status, the pending wait, the journal
positions), so a client that reconnects with ``Last-Event-ID`` gets exactly
the events it has not seen, from any server sharing the store.

Modules: ``_cursor`` (event ids), ``_derive`` (events from a run's row and
journal, no I/O), ``_watch`` (reading the store when something may have
changed). A run's summary in events is :class:`~.._models.RunRow`, the
projection lists of runs use too.
"""

from ._cursor import Cursor as Cursor
from ._derive import RunEvent as RunEvent
from ._derive import derive_events as derive_events
from ._derive import summary_data as summary_data
from ._watch import run_events as run_events
from ._watch import runs_events as runs_events
from ._watch import snapshot_events as snapshot_events

__all__ = (
    "Cursor",
    "RunEvent",
    "derive_events",
    "run_events",
    "runs_events",
    "snapshot_events",
    "summary_data",
)
