"""Restoring a snapshot into a target: a PostgreSQL or MariaDB database, a SQLite file or a
directory. Used by drills (scratch targets) and by real restores (targets people choose)."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from onwatch.backups import files, mariadb, restic
from onwatch.core import mariadb as mariadb_tools
from onwatch.core import postgres

Rewrite = Callable[[bytes], bytes]
# How long a loader may take to exit once restic has died writing to it.
LOADER_EXIT_SECONDS = 30


class RestoreFailed(Exception):
    """The target would not take the restore; the message is for people."""


@dataclass(frozen=True)
class Timings:
    fetch: float  # until the last byte left the repository
    restore: float  # until the target held everything


def describe_exit(code: int) -> str:
    return f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"


def to_postgresql(
    repo: restic.Repo, snap: restic.Snapshot, server: postgres.Server, database: str
) -> Timings:
    """Stream `restic dump` into pg_restore, as `restic dump … | pg_restore` would."""
    command = postgres.restore_command(server, database)
    return stream_into(repo, snap, command, server.tool_env(), "pg_restore", postgres.last_error)


def to_mariadb(
    repo: restic.Repo,
    snap: restic.Snapshot,
    server: mariadb_tools.Server,
    database: str,
    events_off: bool = False,
) -> Timings:
    """Stream `restic dump` into the mariadb client, which stops at the first error.
    With events_off the dump's scheduled events arrive switched off (for drills: a copy
    must not run the source's jobs)."""
    with mariadb_tools.option_file(server) as options:
        try:
            command = mariadb_tools.restore_command(options, database)
        except mariadb_tools.MariaDBError as e:
            raise RestoreFailed(str(e)) from e
        rewrite = mariadb.switch_off_events if events_off else None
        return stream_into(
            repo,
            snap,
            command,
            mariadb_tools.tool_env(),
            "mariadb",
            mariadb_tools.last_error,
            rewrite,
        )


def stream_into(
    repo: restic.Repo,
    snap: restic.Snapshot,
    command: list[str],
    env: dict[str, str],
    name: str,
    last_error: Callable[[list[str]], str],
    rewrite: Rewrite | None = None,
) -> Timings:
    """`restic dump … | command`: fetch time ends with restic's last byte, restore time
    with the loader's exit; a loader that fails says why in its own last error line.
    With `rewrite`, whole lines of the dump pass through it on their way."""
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as err:
        dump = restic.start_dump(repo, snap.id, snap.paths[0], stdout=subprocess.PIPE)
        assert dump.proc.stdout is not None
        relay: Relay | None = None
        if rewrite is None:
            loader = subprocess.Popen(
                command, stdin=dump.proc.stdout, stdout=subprocess.DEVNULL, stderr=err, env=env
            )
            dump.proc.stdout.close()
        else:
            loader = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env
            )
            assert loader.stdin is not None
            relay = Relay(dump.proc.stdout, loader.stdin, rewrite)
        failure: restic.ResticError | None = None
        try:
            restic.finish(dump)
        except restic.ResticError as e:
            # Restic dies of the broken pipe when the loader stopped reading first: then
            # the loader's own error line is the one that explains.
            broken_pipe = dump.proc.returncode == -signal.SIGPIPE
            if not (broken_pipe and loader_failed(loader)):
                failure = e
                loader.kill()
        if relay is not None:
            relay.join()
            if relay.error:
                loader.kill()
                loader.wait()
                raise RestoreFailed(f"the dump could not be passed on to {name}: {relay.error}")
        if failure is not None:
            loader.wait()
            raise failure
        fetched = time.monotonic()
        code = loader.wait()
        err.seek(0)
        lines = err.read().strip().splitlines()
    if code != 0:
        raise RestoreFailed(f"{name} {describe_exit(code)} ({last_error(lines)})")
    return Timings(fetched - started, time.monotonic() - fetched)


def loader_failed(loader: subprocess.Popen[bytes]) -> bool:
    try:
        return loader.wait(timeout=LOADER_EXIT_SECONDS) != 0
    except subprocess.TimeoutExpired:
        return False


class Relay(threading.Thread):
    """Copies source to sink, handing `rewrite` whole lines only (a megabyte or so at a
    time). A sink that stops reading ends the copy (its exit status says why); any other
    failure is kept in `error`, since the loader, seeing its input end, may exit 0."""

    def __init__(self, source: IO[bytes], sink: IO[bytes], rewrite: Rewrite) -> None:
        super().__init__(daemon=True)
        self.source, self.sink, self.rewrite = source, sink, rewrite
        self.error = ""
        self.start()

    def run(self) -> None:
        pending = b""
        try:
            while chunk := self.source.read(1 << 20):
                block = pending + chunk
                cut = block.rfind(b"\n") + 1
                pending = block[cut:]
                if cut:
                    self.sink.write(self.rewrite(block[:cut]))
            if pending:
                self.sink.write(self.rewrite(pending))
        except BrokenPipeError:
            pass
        except Exception as e:  # anything else would cut the restore short unseen
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.source.close()
            with suppress(BrokenPipeError):
                self.sink.close()


def to_sqlite(repo: restic.Repo, snap: restic.Snapshot, target: Path) -> Timings:
    started = time.monotonic()
    # Beside the target: on its disk, so a drill's scratch directory holds it too.
    with tempfile.TemporaryDirectory(prefix="onwatch-fetch-", dir=target.parent) as tmp:
        download = Path(tmp) / "download.sqlite3"
        with download.open("wb") as f:
            restic.finish(restic.start_dump(repo, snap.id, snap.paths[0], stdout=f))
        fetched = time.monotonic()
        try:
            files.sqlite_copy(download, target)
        except sqlite3.DatabaseError as e:
            raise RestoreFailed(f"the restored file is not a usable SQLite database ({e})") from e
    return Timings(fetched - started, time.monotonic() - fetched)


def to_directory(repo: restic.Repo, snap: restic.Snapshot, target: Path) -> Timings:
    """The snapshot's directory becomes `target` itself (restic 0.14 restores full paths,
    so it goes to a staging directory beside the target first)."""
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".onwatch-restore-", dir=target.parent))
    try:
        restic.restore(repo, snap.id, staging)
        restored = staging / snap.paths[0].lstrip("/")
        if not restored.is_dir():
            raise RestoreFailed(f"the snapshot held no directory {snap.paths[0]}")
        if target.exists():
            target.rmdir()  # callers pass a missing or empty target
        restored.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # restic restore fetches and writes in one go; it is all counted as restore time.
    return Timings(0.0, time.monotonic() - started)
