"""The actor machinery that hosts runs. Internal: nothing here is public API.

- ``_flow_actor``: one live run (re-executes its flow against the journal);
- ``_outcomes``: what became of one activation (completed, failed, evicted...);
- ``_supervisor``: starts actors, bounds how many are live and resident,
  restarts runs that crashed for infrastructure reasons, turns flow errors
  into status ``failed``;
- ``_directory``: run id -> live actor in this process, and who owns a lease.

Actors see their host through narrow Protocols (``journal._host.Host``, the
supervisor's ``ActorHost``), never the runtime; the services that renew
leases, fire timers and deliver other processes' messages are placement
decisions and live in ``kitaru._runtime``.
"""

__all__ = ()
