"""Where source files land: a local folder or a blob container, behind one interface.

A domain names its files by path (`2026-11-20/users.csv`); `LandingZone` finds them in a local
folder when `local_folder` is set, else in the blob container (Azure or Azurite). Both give the
file's bytes as chunks, so parsers stream the same way from either.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import dagster as dg

from dw_platform.lib.blob import BlobStorage

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class LandedFile:
    """One file in a landing zone: its path there, a version tag and its size."""

    path: str
    version: str
    size: int
    location: str  # where it is, stable across runs (lineage): file://<folder> or azure://<account>/<container>

    @property
    def uri(self) -> str:
        return f"{self.location.rstrip('/')}/{self.path}"


class Landing(Protocol):
    def find(self, path: str) -> LandedFile | None: ...

    def list(self) -> Iterator[LandedFile]: ...

    def chunks(self, file: LandedFile) -> Iterator[bytes]: ...

    def put(self, path: str, data: bytes) -> LandedFile: ...


class LocalLanding:
    """A folder on this machine; paths are relative to it."""

    def __init__(self, root: Path):
        self.root = Path(root)

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

    def list(self) -> Iterator[LandedFile]:
        """Every file under the folder, in path order."""
        if self.root.is_dir():
            for target in sorted(p for p in self.root.rglob("*") if p.is_file()):
                yield self._landed(target.relative_to(self.root).as_posix(), target)

    def _landed(self, path: str, target: Path) -> LandedFile:
        stat = target.stat()
        return LandedFile(path, f"{stat.st_mtime_ns}-{stat.st_size}", stat.st_size, f"file://{self.root.resolve()}")

    def chunks(self, file: LandedFile) -> Iterator[bytes]:
        with open(self._resolve(file.path), "rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield chunk

    def put(self, path: str, data: bytes) -> LandedFile:
        target = self._resolve(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return self.find(path)


class BlobLanding:
    """A blob container; paths are blob names."""

    def __init__(self, storage: BlobStorage):
        self.storage = storage

    def _location(self) -> str:
        # Not the endpoint URL: Azurite's port changes from run to run, and lineage must not.
        client = self.storage.container_client()
        return f"azure://{client.account_name}/{client.container_name}"

    def find(self, path: str) -> LandedFile | None:
        version = self.storage.version(path)
        if version is None:
            return None
        return LandedFile(path, version.etag, version.size, self._location())

    def list(self) -> Iterator[LandedFile]:
        """Every blob in the container, in name order (folder markers, names ending in `/`, left out)."""
        location = None
        for blob in self.storage.list(""):
            if not blob.name.endswith("/"):
                location = location or self._location()
                yield LandedFile(blob.name, blob.etag, blob.size, location)

    def chunks(self, file: LandedFile) -> Iterator[bytes]:
        from dw_platform.lib.blob import BlobVersion

        yield from self.storage.chunks(BlobVersion(file.path, file.version, file.size))

    def put(self, path: str, data: bytes) -> LandedFile:
        self.storage.ensure_container()
        self.storage.upload(path, data)
        return self.find(path)


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
