"""Sources and outputs in object stores: `path: s3://bucket/crm/*.csv`, `output_dir: gs://bucket/out`
(any URL pyarrow.fs opens: s3://, gs://, abfs://, hdfs://, with credentials and endpoints from the
environment as each store's SDK reads them: AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...).

Remote inputs are copied to a local cache before the run and read there, so every reader keeps
its guarantees (rejects with file and row, pieces, snapshots); a copy is fetched again only when
the object's size or modification time changed (with a state the cache lives in it, so an
unchanged object is neither fetched nor ingested again). Remote outputs are written locally
first, atomically as always, then uploaded file by file with run_summary.json last: a reader
that finds this run's run_summary.json finds its other outputs complete.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from resolver.config import Config, ConfigError
from resolver.ingest.readers import InputError

GLOB_CHARS = set("*?[")


def is_url(path: str) -> bool:
    """A location with a scheme (s3://, gs://, ...); a Windows drive letter is not one."""
    scheme, sep, _ = str(path).partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").isalnum()


def _split_glob(url: str) -> tuple[str, list[str]]:
    """(the URL up to the first folder with a glob character, the pattern's segments after it)."""
    scheme, _, rest = url.partition("://")
    parts = rest.split("/")
    for i, part in enumerate(parts):
        if GLOB_CHARS & set(part):
            return f"{scheme}://{'/'.join(parts[:i])}", parts[i:]
    return url, []


def _filesystem(url: str):
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(url)
    except (OSError, ValueError) as exc:  # pyarrow: unknown scheme, bad URI, missing credentials
        raise ConfigError(f"{url}: cannot open this location: {exc}") from exc


def remote_matches(url: str) -> list[tuple[str, object]]:
    """(relative path, FileInfo) of each object the URL (glob: *, ?, [...] within a folder) names,
    sorted so that runs are deterministic."""
    import pyarrow.fs as pafs

    base, pattern = _split_glob(url)
    fs, root = _filesystem(base)
    try:
        if not pattern:
            info = fs.get_file_info(root)
            return [(Path(root).name, info)] if info.type == pafs.FileType.File else []
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=len(pattern) > 1, allow_not_found=True))
    except OSError as exc:
        raise ConfigError(f"{url}: cannot list: {exc}") from exc
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        relative = info.path[len(root):].lstrip("/").split("/")
        if len(relative) == len(pattern) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(relative, pattern)):
            out.append(("/".join(relative), info))
    return sorted(out, key=lambda item: item[0])


def _fetch(url: str, info, target: Path) -> None:
    """The object at `url` copied to `target`, unless the copy there has its size and mtime."""
    mtime_ns = info.mtime_ns if info.mtime_ns is not None else 0
    if target.exists() and target.stat().st_size == info.size and target.stat().st_mtime_ns == mtime_ns:
        return
    import pyarrow.fs as pafs

    fs, path = _filesystem(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    pafs.copy_files(path, str(partial), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    os.utime(partial, ns=(mtime_ns, mtime_ns))
    os.replace(partial, target)


def database_url(source) -> str:
    """A postgresql source's server URL: its path, or the environment variable `env:NAME` names."""
    if source.path.startswith("env:"):
        url = os.environ.get(source.path[4:])
        if not url:
            raise ConfigError(f"source {source.name!r}: the environment variable {source.path[4:]} holds no URL")
        return url
    return source.path


def _export_postgres(source, folder: Path) -> Path:
    """A postgresql source's table or query exported with COPY to folder/rows.csv (replaced only when
    the rows changed, so that unchanged rows keep the file's snapshot)."""
    try:
        import psycopg
    except ImportError:
        raise InputError(f"source {source.name!r}: format postgresql needs psycopg: "
                         "pip install 'resolver-identity[serve]'") from None

    sql = source.query if source.query is not None else \
        "SELECT * FROM " + ".".join('"' + part.replace('"', '""') + '"' for part in source.table.split("."))
    folder.mkdir(parents=True, exist_ok=True)
    target, partial = folder / "rows.csv", folder / "rows.csv.partial"
    try:
        with psycopg.connect(database_url(source)) as conn, conn.cursor() as cursor, open(partial, "wb") as out:
            with cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv, HEADER true)") as copy:
                for chunk in copy:
                    out.write(chunk)
    except psycopg.Error as exc:
        partial.unlink(missing_ok=True)
        raise InputError(f"source {source.name!r}: cannot read from PostgreSQL: "
                         f"{str(exc).strip().splitlines()[0]}") from exc
    if target.exists() and target.read_bytes() == partial.read_bytes():
        partial.unlink()
    else:
        os.replace(partial, target)
    return target


def _local_inputs(config: Config, cache: Path) -> dict[str, str]:
    """Each remote source's objects fetched into cache/inputs/<source>/ (a postgresql source's rows
    exported there as CSV), and its path pointed there; returns each local copy's origin (the
    object's URL; a query's source name), for the outputs' `file` columns."""
    origins: dict[str, str] = {}
    for source in config.sources:
        if source.format == "postgresql":
            origin = f"postgresql:{source.name}:{source.table or 'query'}"
            source.path = str(_export_postgres(source, cache / "inputs" / source.name))
            origins[source.path] = origin
            source.format, source.table, source.query = "csv", None, None
            continue
        if not is_url(source.path):
            continue
        base, pattern = _split_glob(source.path)
        folder = cache / "inputs" / source.name
        matches = remote_matches(source.path)
        if not matches:
            raise InputError(f"source {source.name!r}: no objects match {source.path}")
        for relative, info in matches:
            url = f"{base.rstrip('/')}/{relative}" if pattern else source.path
            _fetch(url, info, folder / relative)
            origins[str(folder / relative)] = url
        keep = {folder / relative for relative, _ in matches}
        for stale in (p for p in folder.rglob("*") if p.is_file() and p not in keep):
            stale.unlink()  # an object gone from the store is gone from the source
        source.path = str(folder / "/".join(pattern)) if pattern else str(folder / Path(base).name)
    return origins


def name_origins(resolution, origins: dict[str, str]) -> None:
    """The outputs' `file` columns (identity_map, rejects) naming each remote row's object or query,
    not the cached copy it was read from."""
    if not origins:
        return
    for frame in (resolution.identity_map, resolution.rejects):
        if frame is None or "file" not in frame or not len(frame):
            continue
        column = frame["file"]
        if isinstance(column.dtype, pd.CategoricalDtype):  # distinct copies have distinct origins
            frame["file"] = column.cat.rename_categories(lambda f: origins.get(str(f), f))
        else:
            frame["file"] = column.map(lambda f: origins.get(str(f), f)).astype(column.dtype)


def publish(local: Path, url: str) -> None:
    """Upload the output folder's files under `url`, run_summary.json last."""
    import pyarrow.fs as pafs

    fs, root = _filesystem(url)
    files = sorted((p for p in local.rglob("*") if p.is_file()), key=lambda p: (p.name == "run_summary.json", str(p)))
    for path in files:
        target = f"{root.rstrip('/')}/{path.relative_to(local).as_posix()}"
        try:
            pafs.copy_files(str(path), target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        except OSError as exc:
            raise ConfigError(f"{url}: cannot write {path.name}: {exc}") from exc


@contextlib.contextmanager
def staged(config: Config, state_dir: Path | None) -> Iterator[tuple[Config, str | None, dict[str, str]]]:
    """The run's config with remote sources fetched to a local cache and a remote output_dir
    replaced by a local folder; then the URL to publish it to (None: nothing to publish) and each
    cached copy's origin (name_origins). With a state the cache lives in it (state_dir/remote);
    else in a folder removed afterwards."""
    remote_output = config.run.output_dir if is_url(config.run.output_dir) else None
    if remote_output is None and not any(is_url(s.path) or s.format == "postgresql" for s in config.sources):
        yield config, None, {}
        return
    config = config.model_copy(deep=True)
    with contextlib.ExitStack() as stack:
        if state_dir is not None:
            cache = Path(state_dir) / "remote"
        else:
            cache = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="resolver-remote-")))
        origins = _local_inputs(config, cache)
        if remote_output is not None:
            config.run.output_dir = str(cache / "outputs")
        yield config, remote_output, origins
