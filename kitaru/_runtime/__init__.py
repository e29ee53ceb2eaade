"""The runtime layer: hosting flows in one process, over the actors. Internal.

- ``_runtime``: :class:`kitaru.Runtime` (lifecycle and the public API) and
  :func:`kitaru.runtime`;
- ``_placement``: which runs this runtime claims and hosts (recover, wake,
  claim, sweep);
- ``_services``: the three long-lived tasks (leases and sweeps, timers,
  wake-ups from other processes) driving the placement;
- ``_rerun``: replay and retry;
- ``_inspect``: the read side (``RunInfo``, outputs, failures);
- ``_event_bus``: in-process notice that a run changed, for live views;
- ``_current``: the runtime open in this task;
- ``_modules``: importing the modules that define a worker's flows.

The package is named with an underscore because ``kitaru.runtime`` is the
public function that opens a runtime.
"""

from ._runtime import Runtime as Runtime
from ._runtime import runtime as runtime

__all__ = ("Runtime", "runtime")
