"""PostgreSQL run store: many workers on many machines sharing one database.

Built on asyncpg, imported only when a ``postgresql://`` store is opened.
Semantics mirror :class:`~kitaru.storage.memory.MemoryStore` exactly; the
contract suite in ``tests/storage`` holds every backend to them.

URL: ``postgresql://user:password@host:5432/database?schema=kitaru&pool_max=10``
(``postgres://`` and ``postgresql+asyncpg://`` work too). kitaru's own query
parameters, documented in :mod:`kitaru.storage.postgres._url`, are ``schema``,
``pool_min``, ``pool_max``, ``retry_for``, ``connect_timeout``,
``command_timeout``, ``statement_cache_size``, ``listen`` and
``application_name``; every other parameter (``sslmode``, ...) goes to
asyncpg unchanged.

How it works
------------
- **One statement per mutation.** Each write is a single statement (data-
  modifying CTEs where a write has parts), so it is its own transaction and
  one round trip; only ``consume`` needs an explicit three-statement
  transaction. Guarded writes (``RunPatch.expect``) put the status test in the
  ``UPDATE``'s ``WHERE``, so they are atomic without explicit locks.
- **Group commit.** Concurrent ``record`` calls (checkpoints, run
  completions) share transactions, and so do concurrent ``create_run`` calls
  without a journal: a call that finds nothing in flight runs at once, and
  the calls that arrive meanwhile go out together when it is done, as one
  statement, each caller getting its own result
  (:mod:`kitaru.storage.postgres._batch`; ``_store.GROUP_COMMIT = False``
  switches it off). Each of the two batchers leads on a connection of its own outside the pool
  (a checkout costs the client more than the statement), so a store opens at
  most ``pool_max`` + 2 connections besides the listener's.
- **Claiming.** ``claim`` is one guarded ``UPDATE ... RETURNING``.
  ``due`` and ``orphans`` select ``FOR UPDATE SKIP LOCKED``, so a worker never
  waits for rows another worker is claiming; :meth:`PostgresStore.claim_due`
  and :meth:`PostgresStore.claim_orphans` select and claim due runs and runs
  nobody hosts in one statement (the :class:`~kitaru.storage.BulkClaims`
  capability).
- **Wake-ups.** ``post`` (and a write that leaves a suspended run with a
  deadline unhosted) sends ``pg_notify`` in its own transaction, and
  :meth:`PostgresStore.announce_runnable` sends one when a run was left for
  any worker. One dedicated connection per store LISTENs and bumps counters,
  so ``change_token()`` costs no query and
  :meth:`PostgresStore.wait_for_change` wakes the runtime as soon as the
  notification arrives, with no polling (the
  :class:`~kitaru.storage.SignalsChanges` and
  :class:`~kitaru.storage.AnnouncesRunnable` capabilities). Message ids are
  taken under an advisory lock held until commit, so they become visible in
  id order.

Connection faults
-----------------
A connection terminated by the server (``pg_terminate_backend``, a restart, a
failover) or lost on the network never loses or duplicates a write:

- Nothing is retried blindly. A failure while *getting* a connection (refused,
  server starting up, too many connections) is retried: nothing was sent. So
  is a transaction the server rolled back (deadlock, serialization failure).
- A connection lost *while a statement ran* leaves its outcome unknown: the
  statement may have committed just before the connection broke. The call is
  retried in "uncertain" mode, where every write is safe to run again:

  * journal upserts, ``claim``, ``renew_leases`` and ``release`` are
    idempotent (the journal's primary key on ``(run_id, position)`` and "a
    completed entry is final" make a second write of a checkpoint a no-op);
  * guarded writes (``record`` with a patch, ``update_run``, ``consume``,
    ``reset_journal``) first look for their own effects (the patch's
    ``updated_at`` and fields, the entries, the consumed flag) and report
    success if they are there; if not they run again, and if the guard then
    refuses they look once more, because the first attempt may still have
    been committing on the server (its row lock makes the retry wait for it);
  * ``create_run`` finding exactly the record it tried to insert, and
    ``post`` finding the message that carries its per-call nonce, report
    "created";
  * ``claim_due`` and ``claim_orphans`` also take back runs already leased
    to the caller, so runs claimed by a lost first attempt are returned, not
    stranded.

- The first retry is immediate, later ones back off exponentially (50 ms up
  to 2 s), for at most ``retry_for`` seconds (default 30), after which the
  call raises :class:`kitaru.StorageError`; the runtime's supervisor then
  restarts the run from its journal. A statement that runs longer than
  ``command_timeout`` counts as a lost connection: asyncpg asks the server to
  cancel it, and the connection waits for that before its next use (closing
  it at once would abandon the cancel, and a statement waiting for a lock
  could commit after the retry). On the group-commit connections the server
  cancels it itself (their ``statement_timeout``) and it is retried as rolled
  back; see :mod:`kitaru.storage.postgres._batch`.
- asyncpg's exceptions never cross the store boundary: they are wrapped in
  :class:`kitaru.StorageError` with the URL redacted and any password scrubbed
  from the driver's text (the driver exception is chained only when it is
  free of the password).

Two caveats. Usage increments in a patch (``add_input_tokens``, ...) cannot be
told apart from earlier ones, so an uncertain patch whose other effects are
all present counts as applied; the patch's ``updated_at`` (a wall-clock time)
makes a false match practically impossible. And writes are guarded by the
run's status, not by its lease owner: a worker cut off from the database for
longer than the lease lets another worker resume the run meanwhile, and a
checkpoint both were running may run twice (the journal still keeps the
first result).
"""

from ._store import PostgresStore as PostgresStore

__all__ = ("PostgresStore",)
