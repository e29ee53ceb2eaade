"""One run's journal: the layer between the store and the actors. Internal.

- ``_host``: the narrow Protocols a running flow sees of its host
  (:class:`Host`, :class:`HostedFlow`, :class:`Activation`), never the runtime;
- ``_execution``: one activation's cursor over the run's journal (positions,
  recorded entries, commits, suspensions on the run row);
- ``_durable``: the one "replay it, or run it and commit it" routine every
  durable call uses;
- ``_suspend``: the durable halves of wait, sleep and send;
- ``_context``: which run (and checkpoint) the current task executes;
- ``_failures``, ``_signals``: how failures are recorded, and the signals
  that unwind a flow (eviction, continue-as-new);
- ``_budget``: usage accounting and budget checks;
- ``_replay_plan``: which entries a replay or a retry reuses;
- ``_registry``: the checkpoints defined in this process, by name.

It imports only the ground modules and ``kitaru.storage``.
"""

__all__ = ()
