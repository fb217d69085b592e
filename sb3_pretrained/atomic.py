"""Files that are either the old version or the new one, never half-written: write to a temporary file in the same
folder, flush it to disk, then ``os.replace`` it onto the destination (atomic on POSIX and Windows).

A process killed mid-write leaves the destination as it was, plus a hidden ``.<name>.<pid>-<n>.tmp<suffix>`` file
that no loader picks up (rl_zoo3's globs and run ids skip names starting with a dot). The next write of the same
destination removes such leftovers of processes that no longer run.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

_counter = itertools.count()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends without an error it is flushed to disk and
    renamed to ``path``, otherwise removed. The temporary name keeps ``path``'s suffix, so writers that add a
    missing suffix (SB3's ``save``) leave it as it is. Parent folders are created.

    :param path: the destination file
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(final)
    tmp = final.with_name(f".{final.stem}.{os.getpid()}-{next(_counter)}.tmp{final.suffix}")
    try:
        yield tmp
        with tmp.open("rb+") as file:
            os.fsync(file.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_leftovers(final: Path) -> None:
    """Remove the temporary files of writes to ``final`` by processes that were killed mid-write."""
    for leftover in final.parent.glob(f".{glob.escape(final.stem)}.*-*.tmp{glob.escape(final.suffix)}"):
        pid = leftover.name[len(final.stem) + 2 :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            leftover.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically: readers see the old file or the new one."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
