"""The one rule for every file magv writes at a path a user names: verdicts, exports and their data
cards, reports, backups, model files. Every writer goes through `atomic_output` (or `write_text`).

- `-` and `/dev/stdout` are the process's standard output, written in place (where the writer
  streams text; others refuse them).
- A character device (`/dev/null`) or a FIFO is written through: opened and written in place,
  never replaced. Renaming a temporary file over `/dev/null` would turn the device into a regular
  file for the whole machine. A block device, a socket or a directory is refused.
- A symlink is followed: the file it names is replaced and the link stays a link.
- A regular file appears whole or not at all: the content is written to a temporary file beside it,
  synced and renamed over it. An existing file keeps its permission bits; a new one gets the
  usual 0666 & ~umask.
- Never onto a file this process reads: an input (`protect`ed by its reader), the live database
  with the paths DuckDB owns beside it (`.wal`, `.tmp`), a model file. Paths are compared after
  following links, and by inode, so a symlink or hard link to an input is refused too.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from magv.errors import BadInput

STDOUT = ("-", "/dev/stdout")
# Paths DuckDB keeps beside a database file: its write-ahead log and its spill folder.
DUCKDB_SIDE_FILES = (".wal", ".tmp")

_lock = threading.Lock()
_by_path: dict[str, str] = {}
_by_inode: dict[tuple[int, int], str] = {}


def protect(path: str | Path, what: str) -> None:
    """Mark `path` as read by this process (`what` says how, for the refusal): no output may land
    on it."""
    real = os.path.realpath(path)
    with _lock:
        _by_path.setdefault(real, f"{what} {path}")
        try:
            st = os.stat(real)
        except OSError:
            return
        if stat.S_ISREG(st.st_mode):
            _by_inode.setdefault((st.st_dev, st.st_ino), f"{what} {path}")


def protect_database(path: str | Path) -> None:
    """The live database and the files DuckDB writes beside it."""
    protect(path, "the database")
    for suffix in DUCKDB_SIDE_FILES:
        # DuckDB names them after the path it was given, which may be a link to the file.
        protect(f"{path}{suffix}", f"a file DuckDB owns ({suffix}) beside the database")
        protect(os.path.realpath(path) + suffix, f"a file DuckDB owns ({suffix}) beside the database")


def forget() -> None:
    """Start a new command: nothing is read yet."""
    with _lock:
        _by_path.clear()
        _by_inode.clear()


@dataclass(frozen=True)
class Target:
    """Where a write lands. kind: "stdout", "through" (device or FIFO, written in place) or
    "file" (a regular file, replaced by rename)."""

    kind: str
    path: Path | None = None  # the file written (links followed); None for stdout
    mode: int | None = None  # permission bits of the file it replaces


def target(dest: str | Path, what: str = "output") -> Target:
    """Where `dest` leads, checked against the rule of the module docstring; BadInput otherwise."""
    if str(dest) in STDOUT:
        return Target("stdout")
    path = Path(dest)
    try:
        st: os.stat_result | None = os.stat(path)  # follows links
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise BadInput(f"{what} {path}: cannot be written: {exc.strerror}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise BadInput(f"{what} {path}: is a directory; expected the path of a file")
    if st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        return Target("through", path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a block device" if stat.S_ISBLK(st.st_mode) else "a socket or other special file"
        raise BadInput(f"{what} {path}: is {kind}; expected a file, a FIFO, a character device or -")
    real = Path(os.path.realpath(path))
    with _lock:
        owner = _by_path.get(str(real))
        if owner is None and st is not None:
            owner = _by_inode.get((st.st_dev, st.st_ino))
    if owner is not None:
        shown = path if str(real) == str(path) else f"{path} (-> {real})"
        raise BadInput(
            f"{what} {shown}: is {owner}, which this command reads; writing there would destroy it. "
            "Choose another path"
        )
    return Target("file", real, None if st is None else stat.S_IMODE(st.st_mode))


@contextmanager
def atomic_output(dest: str | Path, what: str = "output", *, replace: bool = True) -> Iterator[Path]:
    """Yield the path to write `dest`'s content to: a temporary file beside it, renamed over it when
    the block ends without error (a device or FIFO: the path itself). `replace=False`: an existing
    file is refused, also one that appeared while the block ran."""
    t = target(dest, what)
    if t.kind == "stdout":
        raise BadInput(f"{what} {dest}: this command writes a file, not standard output; give a file path")
    assert t.path is not None
    if t.kind == "through":
        yield t.path
        return
    if not replace and t.mode is not None:
        raise BadInput(f"{what} {dest}: already exists; choose a new path")
    try:
        t.path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"{what} {dest}: cannot create the folder {t.path.parent}: {exc.strerror}") from None
    tmp = t.path.with_name(f".{t.path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if t.mode is not None:
            os.chmod(tmp, t.mode)
        _sync(tmp)
        if not replace and os.path.lexists(t.path):  # appeared while writing: never replace it
            raise BadInput(f"{what} {dest}: already exists; choose a new path")
        os.replace(tmp, t.path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(dest: str | Path, text: str, what: str = "output") -> None:
    """`text` to `dest` by the module's rule; `-` and /dev/stdout are standard output."""
    if target(dest, what).kind == "stdout":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with atomic_output(dest, what) as path, open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _sync(path: Path) -> None:
    """The content on disk before the rename makes it visible: a crash then leaves the old file or
    the new one, never an empty one."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # the writer made nothing (a folder COPY, say): the rename below says so
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
