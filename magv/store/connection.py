"""Opening the DuckDB file, transactions and the insert paths every table family writes through.

One process writes at a time (DuckDB's file lock); within the process a lock serialises the
threads that share the connection.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from magv import outputs
from magv.errors import BadInput, RunFailed, StoreLocked
from magv.models import canonical_json
from magv.store import schema

# Bytes 8-11 of every DuckDB database file.
_DUCKDB_MAGIC = b"DUCK"


def to_json(value: Any) -> str | None:
    return None if value is None else canonical_json(value)


def _lock_holder(message: str) -> str:
    """' (PID n: its command line)' of the process DuckDB names as holding the lock, if it says."""
    m = re.search(r"\(PID (\d+)\)", message)
    if not m:
        return ""
    pid = m.group(1)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        command = " ".join(a.decode(errors="replace") for a in argv if a)[:160]
    except OSError:
        command = ""
    return f" (PID {pid}: {command})" if command else f" (PID {pid})"


def _check_is_duckdb(path: Path) -> None:
    """Refuse an existing file that is not a DuckDB database before DuckDB sees it: given a SQLite
    file, DuckDB would try to load (and might download) its sqlite extension to open it."""
    if path.is_dir():
        raise BadInput(f"database: {path} is a directory; give a file path")
    if not path.is_file():  # a FIFO or a device would block the read below, or never end
        raise BadInput(f"database: {path} is not a regular file")
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
    except OSError as exc:
        raise BadInput(f"database: {path}: cannot read: {exc.strerror}") from None
    if head[8:12] != _DUCKDB_MAGIC:
        raise BadInput(f"database: {path} is not a DuckDB database file (empty, or of another kind)")


class Connection:
    """One DuckDB file, opened and brought to this magv's schema. Use as a context manager or call
    `close()`. Opened `read_only`, the file is never created nor changed."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        self._in_tx = False
        outputs.protect_database(self.path)  # no output of this process may land on it
        self.con = self._connect()
        try:
            version = schema.file_version(self.con, self.path)
            schema.check_readable(self.path, version, read_only)
            if not read_only and version < schema.SCHEMA_VERSION:
                with self._lock:
                    schema.migrate(self.con, version)
        except BaseException:
            self.close()
            raise

    # -- opening -----------------------------------------------------------------------------

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if self.path.exists():
            _check_is_duckdb(self.path)
        elif self.read_only:
            raise BadInput(f"database: {self.path}: no such file (run a stage first)")
        parent = self.path.parent
        if not parent.exists():
            try:
                parent.mkdir(parents=True)
            except OSError as exc:
                raise BadInput(
                    f"database: {self.path}: cannot create directory {parent}: {exc.strerror}"
                ) from None
        try:
            return duckdb.connect(str(self.path), read_only=self.read_only)
        except duckdb.IOException as exc:
            text = str(exc)
            if "lock" in text.lower():
                holder = _lock_holder(text)
                if self.read_only:
                    # DuckDB's file lock is exclusive while a process writes: readers cannot share it.
                    raise StoreLocked(
                        f"database: {self.path} is being written by another process{holder}; DuckDB lets "
                        "no other process open the file meanwhile, not even to read: try again when it finishes"
                    ) from None
                raise StoreLocked(
                    f"database: {self.path} is in use by another magv process{holder} "
                    "(DuckDB allows one writer; wait for it to finish or use --wait)"
                ) from None
            raise BadInput(f"database: {self.path}: cannot open: {text}") from None
        except duckdb.Error as exc:
            raise BadInput(f"database: {self.path}: not a DuckDB database: {exc}") from None

    @property
    def schema_version(self) -> int:
        with self._lock:
            return schema.file_version(self.con, self.path)

    def close(self) -> None:
        try:
            self.con.close()
        except Exception:
            pass

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- transactions and reads ----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all."""
        with self._lock:
            if self._in_tx:  # nested: the outer transaction decides
                yield
                return
            self.con.execute("BEGIN")
            self._in_tx = True
            try:
                yield
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            finally:
                self._in_tx = False
            self.con.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts."""
        with self._lock:
            cur = self.con.execute(sql, params or [])
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        with self._lock:
            row = self.con.execute(sql, params or []).fetchone()
        return row[0] if row else None

    # -- the two insert paths ------------------------------------------------------------------

    def _insert(self, table: str, rows: Sequence[dict[str, Any]], conflict: str = "DO NOTHING") -> int:
        """Insert rows (dicts of Python values); returns how many were written (new, or updated by
        an upsert `conflict`)."""
        if not rows:
            return 0
        cols = list(rows[0])
        quoted = ", ".join(f'"{c}"' for c in cols)
        row_marks = "(" + ", ".join("?" for _ in cols) + ")"
        inserted = 0
        with self._lock, self.transaction():
            # Multi-row VALUES with RETURNING counts the new rows without scanning the table.
            for start in range(0, len(rows), 500):
                batch = rows[start : start + 500]
                sql = (
                    f"INSERT INTO {table} ({quoted}) VALUES {', '.join(row_marks for _ in batch)} "
                    f"ON CONFLICT {conflict} RETURNING 1"
                )
                params = [r[c] for r in batch for c in cols]
                inserted += len(self.con.execute(sql, params).fetchall())
        return inserted

    def _insert_from(
        self, target: str, select: str, params: Sequence[Any], conflict: str = "DO NOTHING"
    ) -> int:
        """INSERT INTO <target> <select> ON CONFLICT <conflict>, in a transaction, for rows given
        as numpy columns (see `_registered`); returns how many rows the table gained (an upsert's
        updates are not counted)."""
        table = target.split(" ", 1)[0]
        with self._lock:
            before = self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            with self.transaction():
                self.con.execute(f"INSERT INTO {target} {select} ON CONFLICT {conflict}", list(params))
            return self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] - before

    @contextmanager
    def _registered(self, name: str, columns: dict[str, Any]) -> Iterator[None]:
        """numpy columns visible to SQL as the view `name` while the block runs."""
        with self._lock:
            self.con.register(name, columns)
            try:
                yield
            finally:
                self.con.unregister(name)

    # -- the whole file ------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {t: self.con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in schema.TABLES}

    def backup(self, dest: str | Path) -> Path:
        """A consistent copy: checkpoint, then copy the file while holding the lock. Written by
        `magv.outputs` (whole or nothing at `dest`, never onto a file DuckDB owns) and never over an
        existing file; a `.wal` already beside `dest` is refused too, as DuckDB would replay that
        stale log into the copy when it is opened."""
        dest = Path(dest)
        if dest.exists():
            raise BadInput(f"backup: {dest} already exists; choose a new path")
        if not dest.parent.exists():
            raise BadInput(f"backup: directory {dest.parent} does not exist")
        stale = Path(f"{dest}.wal")
        if stale.exists():
            raise BadInput(f"backup: {stale} exists; DuckDB would replay it into the copy. Choose a new path")
        try:
            with outputs.atomic_output(dest, "backup", replace=False) as tmp, self._lock:
                self.con.execute("CHECKPOINT")
                shutil.copyfile(self.path, tmp)
        except OSError as exc:  # a full disk, say: the work failed, not the input
            raise RunFailed(
                f"backup: cannot write {dest}: {exc.strerror or exc}; nothing was left there"
            ) from None
        return dest
