"""Where source files land: a local folder or a blob container, behind one interface.

A domain names its files by path (`2026-11-20/users.csv`); `LandingZone` finds them in a local
folder when `local_folder` is set, else in the blob container (Azure or Azurite). Both give the
file's bytes as chunks, so parsers stream the same way from either. `archive` moves a processed
file into an archive folder gzip-compressed (a file that arrived compressed keeps its own bytes),
`move` files it elsewhere as it is, both streaming and deleting the original only after the copy
is complete. `waiting_files` finds files that have waited too long to be loaded.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

import dagster as dg

from dw_platform.lib.blob import BlobStorage, BlobVersion, storage_credentials_from_env
from dw_platform.lib.compression import HEAD_BYTES, detect

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class LandedFile:
    """One file in a landing zone: its path there, a version tag and its size."""

    path: str
    version: str
    size: int
    location: str  # where it is, stable across runs (lineage): file://<folder> or azure://<account>/<container>
    modified: datetime | None = None  # when this version arrived

    @property
    def uri(self) -> str:
        return f"{self.location.rstrip('/')}/{self.path}"


def file_chunks(path: Path) -> Iterator[bytes]:
    """A local file's bytes, CHUNK_BYTES at a time."""
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            yield chunk


class Landing(Protocol):
    def location(self) -> str: ...

    def find(self, path: str) -> LandedFile | None: ...

    def list(self, prefix: str = "") -> Iterator[LandedFile]: ...

    def chunks(self, file: LandedFile) -> Iterator[bytes]: ...

    def put(self, path: str, data: bytes | Iterable[bytes]) -> LandedFile: ...

    def delete(self, file: LandedFile) -> bool: ...


class LocalLanding:
    """A folder on this machine; paths are relative to it."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def location(self) -> str:
        return f"file://{self.root.resolve()}"

    def _resolve(self, path: str) -> Path:
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root.resolve()):
            raise ValueError(f"{path!r} is outside the landing folder {self.root}")
        return target

    def find(self, path: str) -> LandedFile | None:
        target = self._resolve(path)
        if not target.is_file():
            return None
        return self._landed(path, target)

    def _landed(self, path: str, target: Path) -> LandedFile:
        stat = target.stat()
        modified = datetime.fromtimestamp(stat.st_mtime, timezone.utc)
        return LandedFile(path, f"{stat.st_mtime_ns}-{stat.st_size}", stat.st_size, self.location(), modified)

    def list(self, prefix: str = "") -> Iterator[LandedFile]:
        """Files whose path starts with `prefix`, in path order (hidden and partial files skipped)."""
        root = self.root.resolve()
        paths = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if not name.startswith("."):
                    path = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
                    if path.startswith(prefix):
                        paths.append(path)
        for path in sorted(paths):
            found = self.find(path)
            if found is not None:
                yield found

    def chunks(self, file: LandedFile) -> Iterator[bytes]:
        return file_chunks(self._resolve(file.path))

    def put(self, path: str, data: bytes | Iterable[bytes]) -> LandedFile:
        """Write through a hidden temporary file renamed into place: readers never see half a file."""
        target = self._resolve(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=".partial-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in [data] if isinstance(data, bytes) else data:
                    f.write(chunk)
            os.replace(partial, target)
        except BaseException:
            os.unlink(partial)
            raise
        return self.find(path)

    def delete(self, file: LandedFile) -> bool:
        """Delete the file if it is still that version; False when it is gone or has changed."""
        current = self.find(file.path)
        if current is None or current.version != file.version:
            return False
        self._resolve(file.path).unlink()
        return True


class BlobLanding:
    """A blob container; paths are blob names."""

    def __init__(self, storage: BlobStorage):
        self.storage = storage

    def location(self) -> str:
        # Not the endpoint URL: Azurite's port changes from run to run, and lineage must not.
        client = self.storage.container_client()
        return f"azure://{client.account_name}/{client.container_name}"

    def find(self, path: str) -> LandedFile | None:
        version = self.storage.version(path)
        if version is None:
            return None
        return LandedFile(path, version.etag, version.size, self.location(), version.modified)

    def list(self, prefix: str = "") -> Iterator[LandedFile]:
        """Blobs whose name starts with `prefix`, in name order (folder markers, names ending in `/`, left out)."""
        location = None
        for blob in self.storage.list(prefix):
            if not blob.name.endswith("/"):
                location = location or self.location()
                yield LandedFile(blob.name, blob.etag, blob.size, location, blob.modified)

    def chunks(self, file: LandedFile) -> Iterator[bytes]:
        yield from self.storage.chunks(BlobVersion(file.path, file.version, file.size))

    def put(self, path: str, data: bytes | Iterable[bytes]) -> LandedFile:
        self.storage.ensure_container()
        self.storage.upload(path, data)
        return self.find(path)

    def delete(self, file: LandedFile) -> bool:
        return self.storage.delete_version(BlobVersion(file.path, file.version, file.size))


class LandingZone(BlobStorage):
    """A landing zone: `local_folder` when set, otherwise the blob container `container`, configured
    like any `BlobStorage` (a connection string, or an account URL with a key or SAS token)."""

    local_folder: str = ""
    container: str = ""

    def landing(self) -> Landing:
        if self.local_folder:
            return LocalLanding(Path(self.local_folder))
        if not self.container:
            raise dg.Failure("no landing zone configured: set a local folder or a blob container", allow_retries=False)
        return BlobLanding(self)


def landing_zone_from_env(folder_variable: str, container_variable: str, default_container: str) -> LandingZone:
    """A domain's landing zone from the environment: the local folder in `folder_variable` when
    set, else the blob container named in `container_variable` (a connection string, or an
    account URL with a key or SAS token)."""
    if os.environ.get(folder_variable):
        return LandingZone(local_folder=dg.EnvVar(folder_variable))
    container = os.environ.get(container_variable, default_container)
    return LandingZone(container=container, **storage_credentials_from_env())


def gzip_chunks(chunks: Iterable[bytes], level: int = 6) -> Iterator[bytes]:
    """The gzip-compressed form of a byte stream, streaming."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    for chunk in chunks:
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush()


def archive(zone: Landing, file: LandedFile, destination: str) -> LandedFile:
    """Write `file` to `destination` gzip-compressed (as it is when it arrived compressed), then
    delete the original if it is still that version (a newer upload under the same name stays for
    its own run). Nothing is deleted before the archive is completely written."""
    chunks = iter(zone.chunks(file))
    head = next(chunks, b"")
    data = itertools.chain([head], chunks)
    archived = zone.put(destination, data if detect(head[:HEAD_BYTES]) else gzip_chunks(data))
    zone.delete(file)
    return archived


def move(zone: Landing, file: LandedFile, destination: str) -> LandedFile:
    """Copy `file` to `destination` as it is, then delete the original if it is still that version."""
    moved = zone.put(destination, zone.chunks(file))
    zone.delete(file)
    return moved


def put_report(zone: Landing, path: str, report: dict) -> LandedFile:
    """A file's report (JSON) beside it."""
    return zone.put(path, json.dumps(report, indent=2, sort_keys=True, default=str).encode())


def failure_report(file: LandedFile, error: Exception, started: datetime) -> dict:
    """The report filed beside a file that cannot be loaded: why, and for a file refused as
    identical to one loaded before (`identical_files.IdenticalFile`), which load it repeats."""
    report = {
        "file": file.path,
        "version": file.version,
        "status": getattr(error, "ledger_status", "failed"),
        "error": str(error),
        "started_at": started,
        "finished_at": datetime.now(timezone.utc),
    }
    if (first := getattr(error, "first", None)) is not None:
        report["identical_to"] = {"file": first.source, "batch_id": str(first.batch_id), "loaded_at": first.finished_at}
    return report


def waiting_files(
    files: Iterable[LandedFile], max_wait: timedelta, now: datetime, loaded: Callable[[LandedFile], bool] | None = None
) -> list[tuple[str, timedelta]]:
    """The files that arrived longer than `max_wait` ago and (given `loaded`) have not been loaded
    since, oldest first, with how long they have waited."""
    late = [
        (f.path, now - f.modified)
        for f in files
        if f.modified is not None and now - f.modified > max_wait and not (loaded and loaded(f))
    ]
    return sorted(late, key=lambda item: -item[1])
