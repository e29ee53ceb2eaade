"""Who hosts which run: the in-process map and lease-owner identities.

One activation per run: inside a process the directory's map guarantees it;
across processes the run's lease row does. An owner id is
``host/pid/token`` so a runtime can tell that a lease belongs to a process on
this machine that no longer exists and take the run over at once instead of
waiting for the lease to expire.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Generic, TypeVar

__all__ = ("Directory", "new_owner_id")

#: What the directory maps run ids to (the runtime's flow actors).
A = TypeVar("A")

# Owner ids of the runtimes open in this process: a lease held by an id of this
# process that is not in here belongs to a runtime that is gone.
_open_owners: set[str] = set()
_HOST = socket.gethostname().replace("/", "_")


def new_owner_id() -> str:
    """A fresh owner id for a runtime of this process."""
    return f"{_HOST}/{os.getpid()}/{secrets.token_hex(4)}"


def owner_is_dead(owner: str) -> bool:
    """True when ``owner`` is certainly gone; unknown (other host) is not dead."""
    host, _, rest = owner.partition("/")
    pid_text, _, _ = rest.partition("/")
    if host != _HOST or not pid_text.isdigit():
        return False  # another machine: only its lease expiry tells
    pid = int(pid_text)
    if pid == os.getpid():
        return owner not in _open_owners
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Directory(Generic[A]):
    """Run id -> live actor for one runtime, plus the runtime's owner identity."""

    def __init__(self) -> None:
        self.owner = new_owner_id()
        self.live: dict[str, A] = {}

    def open(self) -> None:
        """Mark this runtime's owner id as alive in this process."""
        _open_owners.add(self.owner)

    def close(self) -> None:
        """Mark this runtime's owner id as gone."""
        _open_owners.discard(self.owner)

    def dead_among(self, owners: list[str]) -> list[str]:
        """The owners in ``owners`` that are certainly gone."""
        return [o for o in owners if o != self.owner and owner_is_dead(o)]
