"""The actor machinery that hosts runs. Internal: nothing here is public API.

- ``_flow_actor``: one live run (re-executes its flow against the journal);
- ``_supervisor``: starts actors, bounds how many are live, restarts runs that
  crashed for infrastructure reasons, turns flow errors into status ``failed``;
- ``_directory``: run id -> live actor in this process, and who owns a lease;
- ``_timers``: the one service that renews leases and sweeps for orphaned runs.
"""

__all__ = ()
