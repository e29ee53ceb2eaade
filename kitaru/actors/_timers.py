"""The runtime's one timer service: lease renewal and the orphan sweep.

One task per runtime, not one per run: every ``lease_seconds / 3`` it extends
all leases this runtime holds with a single statement and looks (with a single
query) for runs of known flows whose owner is gone, which it then resumes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from .._errors import StorageError

if TYPE_CHECKING:
    from .._runtime import Runtime

__all__ = ("lease_service",)

log = logging.getLogger("kitaru.timers")


async def lease_service(runtime: Runtime) -> None:
    """Renew this runtime's leases and resume orphaned runs, forever."""
    period = runtime.config.lease_seconds / 3
    while True:
        await anyio.sleep(period)
        try:
            await runtime.store.renew_leases(
                runtime.owner, runtime.clock() + runtime.config.lease_seconds
            )
            await runtime.recover()
        except StorageError as exc:
            log.warning("lease renewal failed (%s); retrying in %.1f s", exc, period)
