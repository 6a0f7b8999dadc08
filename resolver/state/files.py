"""Atomic files and locks: how the state directory, the outputs and the sync export replace a file
or a folder so that a crash at any moment leaves the old one or the new one, never a torn one.

A file is written to a temporary sibling, fsynced and renamed over its path (`write_atomically`,
`write_text_atomically`, `replace_atomically`); a folder is staged beside its place and swapped in
by two renames (`swap_into_place`). A read-modify-write of a file holds an flock (`file_lock`,
`state_lock`): the kernel releases it when its holder dies. A leaf: it imports only the crash
points that tests kill runs at.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from resolver.crashpoints import crash_point


@contextmanager
def file_lock(path: Path, wait: bool = True):
    """An exclusive flock on `path` (created when missing); yields whether it is held (False only
    when another process holds it and `wait` is False)."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def state_lock(state_dir: Path, name: str):
    """An exclusive lock for a read-modify-write of one file of the state directory."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(state_dir / f".{name}.lock"):
        yield


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_tree(folder: Path) -> None:
    for path in Path(folder).rglob("*"):
        if path.is_file():
            fsync_file(path)


def fsync_directory(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def temporary_sibling(path: Path) -> Path:
    """A fresh hidden name beside `path` (".NAME.tmp-XXXXXXXX")."""
    return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"


def replace_atomically(tmp: Path, path: Path, durable_directory: bool = False) -> None:
    """fsync the finished file `tmp` and rename it over `path` (and, with `durable_directory`,
    fsync the folder so that the rename itself survives a power loss)."""
    fsync_file(tmp)
    os.replace(tmp, path)
    if durable_directory:
        fsync_directory(Path(path).parent)


def write_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write a Parquet file to a temporary sibling, fsync it, rename it over `path`: a crash
    leaves either the old file or the new one, never a torn one."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        frame.reset_index(drop=True).to_parquet(tmp, index=False)
        replace_atomically(tmp, path, durable_directory=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str, tmp: Path | None = None) -> None:
    """Write a text file through a temporary sibling (`tmp`, by default a fresh name), fsynced and
    renamed over `path`."""
    path = Path(path)
    tmp = tmp or temporary_sibling(path)
    tmp.write_text(text, encoding="utf-8")
    replace_atomically(tmp, path)


def swap_into_place(staging: Path, out_dir: Path, retired: Path | None = None) -> None:
    """Rename `staging` to `out_dir`; the folder it replaces is renamed to `retired` (a random
    sibling unless given) and deleted."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    retired = retired or out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(out_dir, retired)
    crash_point("outputs-retired")
    os.replace(staging, out_dir)
    shutil.rmtree(retired, ignore_errors=True)


def link_tree(source: Path, target: Path) -> None:
    """Hard-link every file of `source` into `target` (a copy where links are not possible)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copy2(path, target / path.name)
