"""An append-only spool: what a fast route accepted, kept in files of the data folder
until its digest has stored it, so the request is answered without waiting for the
database's write lock (on SQLite, held by the digest while it writes its batches: the
answers waited 50-60 ms for it at p99 under the bench's load).

Each web process appends to a file of its own, `<created, hex ns>-<pid>.spool`, which it
holds an exclusive flock on while it may still append; past ROTATE_BYTES it starts the
next. A file nobody holds is finished: read to its end it may be removed. A record is

    length (4 bytes, little-endian) | CRC-32 of the payload (4 bytes) | payload

so a record cut short (a process killed mid-write, a disk that filled) is told from a
whole one by its length or its checksum. Only a file's last record can be cut: nothing
is appended to a file after its writer is gone.

Durability is that of the database path it replaces: SQLite with synchronous=NORMAL in
WAL mode (config.py) survives a killed process but may lose its last commits in a power
cut. A record is written with one write() and no fsync: the kernel keeps it through a
kill of the process; a finished file is fsynced when its writer moves on.

The reader keeps no state: it is given a file and an offset (the digest keeps its cursor
in the database, committed with what it stored) and returns the whole records from
there.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("onwatch.ingest")

HEADER = struct.Struct("<II")
SUFFIX = ".spool"
ROTATE_BYTES = 4 * 2**20
MAX_RECORD = 64 * 2**20  # a longer length can only be a damaged header


class SpoolFull(OSError):
    """The record could not be written (the disk is full, or another write error): nothing
    of it is kept."""


def framed(payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True, slots=True)
class Record:
    offset: int  # where it starts in its file
    end: int  # where the next one starts
    payload: bytes


@dataclass(frozen=True, slots=True)
class Read:
    records: list[Record]
    end: int  # the offset after the last whole record read
    # The file's rest from `end` cannot be a record (a length past the file's end, a
    # checksum that does not match): cut by a writer that stopped, once the file is finished.
    damaged: bool


class Spool:
    """The appending side, one per process and folder; thread-safe."""

    def __init__(self, folder: Path, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.folder = folder
        self.rotate_bytes = rotate_bytes
        self.lock = threading.Lock()
        self.fd: int | None = None
        self.name = ""
        self.size = 0
        self.pid = 0

    def append(self, payload: bytes) -> tuple[str, int]:
        """Write one record; the file's name and the offset after the record. SpoolFull
        when it could not be written whole (then nothing of it stays)."""
        data = framed(payload)
        with self.lock:
            fd = self.current()
            try:
                written = os.write(fd, data)
            except OSError as error:
                self.undo()
                raise SpoolFull(
                    error.errno, f"the spool in {self.folder}: {error.strerror}"
                ) from error
            if written != len(data):  # a short write: the disk filled
                self.undo()
                raise SpoolFull(errno.ENOSPC, f"the spool in {self.folder}: no space left")
            self.size += written
            return self.name, self.size

    def current(self) -> int:
        """The file to append to: a new one after a fork (the parent's is its own), or when
        the last one passed rotate_bytes."""
        if self.fd is not None and (self.pid != os.getpid() or self.size >= self.rotate_bytes):
            self.close()
        if self.fd is None:
            self.open()
        assert self.fd is not None
        return self.fd

    def open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pid = os.getpid()
        self.name = f"{time.time_ns():016x}-{self.pid}{SUFFIX}"
        fd = os.open(
            self.folder / self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600
        )
        fcntl.flock(fd, fcntl.LOCK_EX)  # ours while we may append: not finished
        self.fd, self.size = fd, 0

    def undo(self) -> None:
        """Cut a partly written record off again; when even that fails, the file is left
        to the reader (which skips the cut record with a logged line) and a new one taken."""
        assert self.fd is not None
        try:
            os.ftruncate(self.fd, self.size)
        except OSError:
            log.exception("ingest: could not cut a partly written record off %s", self.name)
            self.close()

    def close(self) -> None:
        """Finish the file: fsynced, and its lock let go (nothing more is appended)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        if self.pid == os.getpid():
            try:
                os.fsync(fd)
            except OSError:
                log.warning("ingest: could not fsync %s", self.name, exc_info=True)
        os.close(fd)


def files(folder: Path) -> list[str]:
    """The spool's files, oldest first."""
    try:
        return sorted(e.name for e in os.scandir(folder) if e.name.endswith(SUFFIX))
    except FileNotFoundError:
        return []


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def finished(path: Path) -> bool:
    """Whether no writer holds the file any more (a missing file is finished too)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # and the lock, if taken
    return True


def read(path: Path, offset: int, most: int) -> Read:
    """Up to `most` whole records from `offset`. A record still being written by a live
    writer looks cut as a damaged one does: the caller tells them apart by `finished`."""
    records: list[Record] = []
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            at = offset
            while len(records) < most:
                record = next_record(f, at)
                if record is None:
                    return Read(records, at, f.tell() > at)  # bytes there, not a record
                records.append(record)
                at = record.end
    except FileNotFoundError:
        pass
    return Read(records, records[-1].end if records else offset, False)


def next_record(f: BinaryIO, at: int) -> Record | None:
    """The whole record at `at` (where `f` stands), or None: the file ends, or what is
    there is not a whole record."""
    header = f.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    length, crc = HEADER.unpack(header)
    payload = f.read(length) if length <= MAX_RECORD else b""
    if len(payload) != length or zlib.crc32(payload) != crc:
        return None
    return Record(at, at + HEADER.size + length, payload)
