"""Azure Blob Storage (or the Azurite emulator) as a Dagster resource.

Configured from the environment: a connection string, or an account URL plus a credential
(account key or SAS token). Every domain that reads files keeps them in one container and
moves them between folders (`incoming/`, `processed/`, `failed/`).

Storage errors are classified here and nowhere else: when the SDK's own retries are spent and
storage still did not answer (connection refused, reset, timed out) or answered with a
server-side error (408, 429, 5xx), the operation raises `StorageUnavailable`, a retryable
`dg.Failure`. Anything else (authentication, a missing container, a changed blob) is raised
as the SDK's own exception and is not retried.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import dagster as dg
from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    IncompleteReadError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient, ContainerClient, ExponentialRetry

# The SDK logs every request and response at INFO (headers included): a sensor polling storage
# would log lines every tick with nothing to say. Its warnings and errors still show.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

# Azurite's fixed development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(port: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{host}:{port}/{AZURITE_ACCOUNT};"
    )


class StorageUnavailable(dg.Failure):
    """Blob storage could not be reached or failed on its side: a later attempt may succeed.

    `transient` tells `bronze.load` to let the failure be retried when it happens mid-load.
    """

    transient = True

    def __init__(self, description: str):
        super().__init__(description=description, allow_retries=True)


TRANSIENT_HTTP_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """A storage error worth retrying: no (complete) answer, or a server-side one."""
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, IncompleteReadError, ConnectionError, TimeoutError)):
        return True  # not sent, or no complete answer: refused, reset, timed out
    if isinstance(exc, HttpResponseError):
        return exc.status_code in TRANSIENT_HTTP_STATUS or (exc.status_code or 0) >= 500
    return False


@contextmanager
def _classified(doing: str) -> Iterator[None]:
    try:
        yield
    except StorageUnavailable:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise StorageUnavailable(f"blob storage unavailable while {doing}: {_first_line(exc)}") from exc
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _etag(value: str) -> str:
    """Etags without quotes: listings give them bare, property and upload responses quoted."""
    return value.strip('"')


def _quoted(etag: str) -> str:
    return f'"{etag}"'


@dataclass(frozen=True)
class BlobVersion:
    """One version of one blob: a name and the etag that changes on every upload."""

    name: str
    etag: str
    size: int = 0
    modified: datetime | None = None


class BlobStorage(dg.ConfigurableResource):
    """One container in Azure Blob Storage. Set `connection_string`, or `account_url` + `credential`.

    `retries` and `retry_backoff_s` are the SDK's own retries of each request: retry n waits
    `retry_backoff_s` + 3^n seconds (the SDK's defaults: 3 retries, about 18 s, 24 s, 42 s in all
    a minute and a half); after them the operation gives up with `StorageUnavailable`.
    """

    container: str
    connection_string: str = ""
    account_url: str = ""
    credential: str = ""
    max_chunk_bytes: int = 4 * 1024 * 1024
    retries: int = 3
    retry_backoff_s: int = 15

    def service_client(self) -> BlobServiceClient:
        options = {
            "max_chunk_get_size": self.max_chunk_bytes,
            "max_single_get_size": self.max_chunk_bytes,
            "retry_policy": ExponentialRetry(
                initial_backoff=self.retry_backoff_s,
                retry_total=self.retries,
                random_jitter_range=min(3, self.retry_backoff_s),
            ),
        }
        if self.connection_string:
            return BlobServiceClient.from_connection_string(self.connection_string, **options)
        if self.account_url:
            return BlobServiceClient(self.account_url, credential=self.credential or None, **options)
        raise dg.Failure(
            "no blob storage configured: set DW_BLOB_CONNECTION_STRING, or DW_BLOB_ACCOUNT_URL and "
            "DW_BLOB_CREDENTIAL (the embedded default starts Azurite and sets them itself)",
            allow_retries=False,
        )

    def container_client(self) -> ContainerClient:
        return self.service_client().get_container_client(self.container)

    def ensure_container(self) -> None:
        with _classified(f"creating container {self.container}"):
            try:
                self.container_client().create_container()
            except ResourceExistsError:
                pass

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[BlobVersion]:
        """Blobs under `prefix` in name order, page by page (5,000 a page), never all in memory.
        A container that does not exist yet holds nothing."""
        with _classified(f"listing {self.container}/{prefix}"):
            try:
                for props in self.container_client().list_blobs(name_starts_with=prefix, results_per_page=5000):
                    if start_after is not None and props.name <= start_after:
                        continue
                    yield BlobVersion(props.name, _etag(props.etag), props.size or 0, props.last_modified)
            except ResourceNotFoundError as exc:
                if exc.error_code != "ContainerNotFound":
                    raise

    def version(self, name: str) -> BlobVersion | None:
        """The current version of `name`, or None when it does not exist."""
        with _classified(f"reading the properties of {name}"):
            try:
                props = self.container_client().get_blob_client(name).get_blob_properties()
            except ResourceNotFoundError:
                return None
        return BlobVersion(name, _etag(props.etag), props.size or 0, props.last_modified)

    def delete(self, name: str) -> None:
        """Delete `name` if it exists."""
        with _classified(f"deleting {name}"):
            try:
                self.container_client().get_blob_client(name).delete_blob()
            except ResourceNotFoundError:
                pass

    def chunks(self, blob: BlobVersion) -> Iterator[bytes]:
        """The bytes of exactly this version, in chunks of at most `max_chunk_bytes`.

        The download is pinned to the etag: if the blob is replaced mid-read, the read fails
        instead of mixing two versions.
        """
        with _classified(f"reading {blob.name}"):
            downloader = (
                self.container_client()
                .get_blob_client(blob.name)
                .download_blob(etag=_quoted(blob.etag), match_condition=MatchConditions.IfNotModified)
            )
            yield from downloader.chunks()

    def upload(self, name: str, data, overwrite: bool = True) -> BlobVersion:
        with _classified(f"writing {name}"):
            client = self.container_client().get_blob_client(name)
            result = client.upload_blob(data, overwrite=overwrite)
        return BlobVersion(name, _etag(result["etag"]), 0)

    def upload_json(self, name: str, payload: dict) -> BlobVersion:
        return self.upload(name, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())

    def delete_version(self, blob: BlobVersion) -> bool:
        """Delete exactly this version; False when it is gone or a newer version replaced it."""
        try:
            self.container_client().get_blob_client(blob.name).delete_blob(
                etag=_quoted(blob.etag), match_condition=MatchConditions.IfNotModified
            )
            return True
        except (ResourceNotFoundError, ResourceModifiedError):
            return False

    def move(self, blob: BlobVersion, destination: str, timeout_s: float = 600) -> BlobVersion:
        """Copy `blob` to `destination`, then delete the source only if it is still that version.

        Nothing is deleted before the copy has succeeded; a newer upload under the same name
        (another etag) is left where it is for its own run.
        """
        with _classified(f"moving {blob.name} to {destination}"):
            return self._move(blob, destination, timeout_s)

    def _move(self, blob: BlobVersion, destination: str, timeout_s: float) -> BlobVersion:
        container = self.container_client()
        source = container.get_blob_client(blob.name)
        target = container.get_blob_client(destination)
        target.start_copy_from_url(
            source.url, source_etag=_quoted(blob.etag), source_match_condition=MatchConditions.IfNotModified
        )
        deadline = time.monotonic() + timeout_s
        while (props := target.get_blob_properties()).copy.status == "pending":
            if time.monotonic() > deadline:
                raise TimeoutError(f"copying {blob.name} to {destination} did not finish in {timeout_s:.0f}s")
            time.sleep(0.2)
        if props.copy.status != "success":
            raise OSError(
                f"copying {blob.name} to {destination} ended {props.copy.status}: {props.copy.status_description}"
            )
        try:
            source.delete_blob(etag=_quoted(blob.etag), match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            pass  # gone already, or a newer version was uploaded meanwhile: that one stays for its run
        return BlobVersion(destination, _etag(props.etag), props.size or 0)


def storage_credentials_from_env() -> dict:
    """Blob storage credentials from the environment: DW_BLOB_CONNECTION_STRING when set, else
    DW_BLOB_ACCOUNT_URL with DW_BLOB_CREDENTIAL (a key or SAS token). Settings for `BlobStorage`."""
    if os.environ.get("DW_BLOB_ACCOUNT_URL") and not os.environ.get("DW_BLOB_CONNECTION_STRING"):
        return {"account_url": dg.EnvVar("DW_BLOB_ACCOUNT_URL"), "credential": dg.EnvVar("DW_BLOB_CREDENTIAL")}
    return {"connection_string": dg.EnvVar("DW_BLOB_CONNECTION_STRING")}
