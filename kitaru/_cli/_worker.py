"""``kitaru worker``: host the flows of some modules until a signal."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from ..storage._url import redact

if TYPE_CHECKING:
    from .. import Flow, Runtime

__all__ = ("serve",)

log = logging.getLogger("kitaru.worker")


async def serve(
    rt: Runtime,
    flows: Sequence[Flow[Any, Any]],
    modules: Sequence[str],
    *,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Host ``flows`` on ``rt`` until SIGINT or SIGTERM, then leave the runtime cleanly.

    ``on_event`` receives ``{"event": "started", ...}`` once the runtime is
    open and ``{"event": "stopped", ...}`` after it closed (``--json``).

    The signal receiver is installed before the runtime opens, so a signal that
    arrives while the worker starts up still shuts it down in order.
    """
    names = sorted(f.name for f in flows)
    store = redact(rt.config.store)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with rt:
            log.info(
                "worker %s hosting %d flow(s) %s from %s; store %s",
                rt.owner,
                len(names),
                ", ".join(names),
                ", ".join(modules),
                store,
            )
            if on_event is not None:
                on_event({"event": "started", "owner": rt.owner, "flows": names, "store": store})
            async for signum in signals:
                log.info("%s received: stopping", signal.Signals(signum).name)
                break
    log.info("worker %s stopped", rt.owner)
    if on_event is not None:
        on_event({"event": "stopped", "owner": rt.owner})
    return 0
