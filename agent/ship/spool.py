"""A bounded on-disk queue of encoded batches that outlives the agent that wrote it.

One file per batch, named so that names sort oldest first::

    {run_ns:020d}-{seq:012d}-{agent_id}.batch

``run_ns`` is when the writing agent started, so the spool of an agent that was
killed sorts before everything its successor writes, and within one run the batch
sequence number orders the files. A file holds ``MAGIC``, the CRC32 of the payload
(4 bytes, big endian) and the payload: one self-contained ``Batch`` (it carries its
own dictionary, agent identity and sequence number; see encoder.encode_standalone).
Files are written to ``NAME.tmp``, fsynced and renamed, so a reader never sees half a
batch; a ``.tmp`` left by a crash is removed on open, and a file that fails its
checksum is logged, removed and counted, never delivered and never fatal.

The spool does not evict by itself: the outbox decides what to drop (it knows which
batches are on the wire), using :attr:`Spool.size_bytes` against the bound. An exclusive
``flock`` on ``.lock`` keeps two agents from delivering the same files.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

from pyrometer.agent.shared.errors import AgentError

log = logging.getLogger(__name__)

MAGIC = b"PYRS\x01"
_HEADER = len(MAGIC) + 4
_NAME = re.compile(r"^(\d{20})-(\d{12})-([0-9A-Za-z_.-]{1,64})\.batch$")


class SpoolError(AgentError):
    """The spool directory cannot be used (unsafe, locked by another agent, unwritable)."""


@dataclass(frozen=True, slots=True, order=True)
class SpoolKey:
    """Where one batch sits in the spool; keys order like their file names."""

    run_ns: int
    seq: int
    agent_id: str

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):  # the id becomes part of a path: nothing odd in it
            raise ValueError(f"cannot spool under agent id {self.agent_id!r}")

    @property
    def name(self) -> str:
        return f"{self.run_ns:020d}-{self.seq:012d}-{self.agent_id}.batch"

    @classmethod
    def parse(cls, name: str) -> SpoolKey | None:
        match = _NAME.match(name)
        if match is None:
            return None
        return cls(int(match[1]), int(match[2]), match[3])


class Spool:
    """The files of one spool directory, held under an exclusive lock until close()."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sizes: dict[SpoolKey, int] = {}
        self._lock_fd = _lock(directory)
        try:
            self._scan()
        except OSError:
            self.close()
            raise

    @property
    def size_bytes(self) -> int:
        return sum(self._sizes.values())

    def keys(self) -> list[SpoolKey]:
        """What a previous agent left here, oldest first."""
        return sorted(self._sizes)

    def write(self, key: SpoolKey, payload: bytes) -> None:
        """Store one batch durably (tmp file, fsync, rename, fsync of the directory)."""
        data = MAGIC + zlib.crc32(payload).to_bytes(4, "big") + payload
        path = self.directory / key.name
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(self.directory)
        self._sizes[key] = len(data)

    def read(self, key: SpoolKey) -> bytes | None:
        """The batch's payload; None (logged, file removed) when it is gone or corrupt."""
        try:
            data = (self.directory / key.name).read_bytes()
        except OSError as exc:
            log.warning("spool: cannot read %s (%s); skipping it", key.name, exc)
            self.remove(key)
            return None
        payload = data[_HEADER:]
        crc = data[len(MAGIC):_HEADER]
        if not data.startswith(MAGIC) or crc != zlib.crc32(payload).to_bytes(4, "big"):
            log.warning("spool: %s is corrupt (%d bytes, bad header or checksum); skipping it",
                        key.name, len(data))
            self.remove(key)
            return None
        return payload

    def remove(self, key: SpoolKey) -> None:
        """Forget a delivered, dropped or unreadable batch."""
        self._sizes.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / key.name).unlink()

    def close(self) -> None:
        """Release the directory to the next agent."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _scan(self) -> None:
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".tmp"):  # a write that a crash interrupted
                log.info("spool: removing unfinished %s", entry.name)
                os.unlink(entry.path)
                continue
            key = SpoolKey.parse(entry.name)
            if key is None:
                if entry.name != ".lock":
                    log.warning("spool: ignoring %s (not a spooled batch)", entry.name)
                continue
            self._sizes[key] = entry.stat().st_size
        if self._sizes:
            log.info("spool: %d batches (%d bytes) left by an earlier agent in %s",
                     len(self._sizes), self.size_bytes, self.directory)


def _lock(directory: Path) -> int:
    """Create the directory (owner only), check it is ours, and lock it."""
    try:
        # mkdir's mode applies to the last component only: the per-user parent too
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(directory)
    except OSError as exc:
        raise SpoolError(f"cannot create spool directory {directory}: {exc}") from None
    # a shared temp dir: refuse one that another user made (or a link they planted)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise SpoolError(f"spool directory {directory} is not a directory owned by this user")
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise SpoolError(f"spool directory {directory} is in use by another agent") from None
    return fd


def _fsync_dir(directory: Path) -> None:
    # the rename is durable only once the directory entry is on disk
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
