"""The ingest layer's spool (onwatch/core/ingest/spool.py): its record format, files that
rotate and are finished when their writer lets go, a record cut by a killed writer told
from the whole ones, and a full disk that keeps nothing of a record."""

from __future__ import annotations

import errno
import multiprocessing
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from onwatch.core.ingest import spool
from onwatch.core.ingest.spool import Spool, SpoolFull


def test_a_record_is_its_length_its_checksum_and_its_payload(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    name, end = s.append(b"hello")
    data = (tmp_path / name).read_bytes()
    assert data == struct.pack("<II", 5, zlib.crc32(b"hello")) + b"hello"
    assert end == len(data) == 13
    assert name.endswith(".spool") and name.split("-")[1] == f"{os.getpid()}.spool"


def test_records_are_read_back_in_order_from_any_offset(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    ends = [s.append(f"record {n}".encode())[1] for n in range(5)]
    path = tmp_path / s.name
    found = spool.read(path, 0, 3)
    assert [r.payload for r in found.records] == [b"record 0", b"record 1", b"record 2"]
    assert found.end == ends[2] and not found.damaged
    rest = spool.read(path, found.end, 10)
    assert [r.payload for r in rest.records] == [b"record 3", b"record 4"]
    assert (rest.end, rest.damaged) == (ends[4], False)
    assert spool.read(path, rest.end, 10) == spool.Read([], ends[4], False)


def test_a_file_is_finished_only_once_its_writer_lets_go(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.append(b"one")
    path = tmp_path / s.name
    assert not spool.finished(path)  # another open of the file, even in this process
    s.close()
    assert spool.finished(path)
    assert spool.finished(tmp_path / "gone.spool")


def test_a_full_file_is_finished_and_the_next_one_taken(tmp_path: Path) -> None:
    s = Spool(tmp_path, rotate_bytes=20)
    first, _ = s.append(b"x" * 16)  # 24 bytes: over 20
    second, end = s.append(b"y")
    assert first != second and end == 9
    assert spool.files(tmp_path) == [first, second]  # oldest first
    assert spool.finished(tmp_path / first) and not spool.finished(tmp_path / second)


def cut_writer(folder: str) -> None:
    """A writer killed mid-write: two whole records, then half of the third's bytes."""
    s = Spool(Path(folder))
    s.append(b"first")
    s.append(b"second")
    os.write(s.current(), spool.framed(b"third, cut short")[:11])
    os._exit(0)  # no clean-up of any kind, as after SIGKILL


def test_a_record_cut_by_a_killed_writer_is_told_from_the_whole_ones(tmp_path: Path) -> None:
    proc = multiprocessing.get_context("fork").Process(target=cut_writer, args=(str(tmp_path),))
    proc.start()
    proc.join()
    [name] = spool.files(tmp_path)
    path = tmp_path / name
    assert spool.finished(path)  # its writer is gone
    found = spool.read(path, 0, 10)
    assert [r.payload for r in found.records] == [b"first", b"second"]
    assert found.damaged and found.end == path.stat().st_size - 11


def test_a_record_whose_checksum_fails_ends_what_is_read(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.append(b"good")
    _, end = s.append(b"bad!")
    path = tmp_path / s.name
    with open(path, "r+b") as f:  # one byte of the second record's payload changed
        f.seek(end - 1)
        f.write(b"?")
    found = spool.read(path, 0, 10)
    assert [r.payload for r in found.records] == [b"good"]
    assert found.damaged


def test_a_length_past_any_record_is_damage_not_a_huge_read(tmp_path: Path) -> None:
    path = tmp_path / "0-1.spool"
    path.write_bytes(spool.framed(b"ok") + struct.pack("<II", 2**31, 0) + b"junk")
    found = spool.read(path, 0, 10)
    assert [r.payload for r in found.records] == [b"ok"] and found.damaged


def test_a_full_disk_keeps_nothing_of_the_record(tmp_path: Path, monkeypatch: Any) -> None:
    s = Spool(tmp_path)
    s.append(b"kept")
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        return real_write(fd, data[: len(data) // 2])  # what a disk that fills does

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(SpoolFull, match="no space left"):
        s.append(b"not kept: the disk filled")

    def enospc(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", enospc)
    with pytest.raises(SpoolFull, match="No space left on device"):
        s.append(b"not kept either")
    monkeypatch.setattr(os, "write", real_write)
    s.append(b"kept too")  # the same file goes on, whole
    found = spool.read(tmp_path / s.name, 0, 10)
    assert [r.payload for r in found.records] == [b"kept", b"kept too"]
    assert not found.damaged


def test_a_forked_process_appends_to_a_file_of_its_own(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.append(b"parent's")
    pid = os.fork()
    if pid == 0:
        try:
            s.append(b"child's")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    names = spool.files(tmp_path)
    assert len(names) == 2
    payloads = {n: [r.payload for r in spool.read(tmp_path / n, 0, 10).records] for n in names}
    assert sorted(payloads.values()) == [[b"child's"], [b"parent's"]]
