"""This gateway process's id: `<GATEWAY_ID or host name>-<slot>`, the same after a restart, and
never held by two live processes at once.

The slot is the lowest number whose lock file (in the temporary directory) this process can lock
exclusively; it holds the lock for its lifetime, and the kernel releases it when the process ends,
however it ends (`kill -9` included). The processes of one gunicorn, and of several gunicorns on
one host, so take 0, 1, 2…, and a process that replaces one takes the number it freed: the metrics'
series (labelled by the id) carry on. Uniqueness is per host and temporary directory: two hosts
(or containers) that share a host name need different GATEWAY_IDs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import tempfile

from .settings import GATEWAY_ID_CHARACTERS

logger = logging.getLogger(__name__)

# Slots tried before giving up on a stable id (far more than the processes of one host).
MAX_SLOTS = 1024
# Every character a gateway id may not hold (settings.py).
_NOT_ALLOWED = re.compile(rf"[^{GATEWAY_ID_CHARACTERS}]")


def default_base() -> str:
    """The host name, reduced to the characters an id may hold."""
    return _NOT_ALLOWED.sub("-", socket.gethostname())[:63].strip("-.") or "gateway"


class ProcessSlot:
    """A slot number held, by an exclusive lock on its file, until `release` or the process's end."""

    def __init__(self, index: int, fd: int) -> None:
        self.index = index
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops its lock
            self._fd = None


def claim_slot(base: str, lock_dir: str | None = None, max_slots: int = MAX_SLOTS) -> ProcessSlot:
    """The lowest slot of `base` that no live process holds; OSError if none can be locked."""
    directory = lock_dir or tempfile.gettempdir()
    for index in range(max_slots):
        path = os.path.join(directory, f"chat-gateway-{base}-{index}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        return ProcessSlot(index, fd)
    raise OSError(f"all {max_slots} gateway slots of {base!r} are held")


def claim_gateway_id(configured: str | None, lock_dir: str | None = None) -> tuple[str, ProcessSlot | None]:
    """This process's gateway id and the slot that keeps it its own (None on the fallback).

    If no slot can be locked (an unwritable temporary directory), the id ends with the process id
    instead: unique among live processes of the host too, but new at each start.
    """
    base = configured or default_base()
    try:
        slot = claim_slot(base, lock_dir)
    except OSError as exc:
        fallback = f"{base}-pid{os.getpid()}"
        logger.warning("no gateway slot could be locked (%s): gateway id %s", exc, fallback)
        return fallback, None
    return f"{base}-{slot.index}", slot
