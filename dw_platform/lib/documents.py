"""Raw documents kept as they arrived: a MongoDB collection (through pymongo) when a URI is set.

`MongoDocuments.client()` returns a pymongo `MongoClient`; everything else only uses the pymongo
collection API (`delete_many`, `insert_many`), so any pymongo-compatible client works. Without a
URI the domain keeps raw documents in a JSONB bronze table instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dagster as dg


class MongoDocuments(dg.ConfigurableResource):
    """A MongoDB collection for raw documents; `uri` empty means "not configured"."""

    uri: str = ""
    database: str = "dw_raw"
    collection: str = "documents"

    @property
    def configured(self) -> bool:
        return bool(self.uri)

    def client(self):
        import pymongo

        return pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=10_000, tz_aware=True)

    def replace_partition(self, partition: dict[str, Any], docs: Iterable[dict[str, Any]]) -> int:
        """Replace the documents stamped with `partition` (e.g. {"arrival_date": ..., "source": ...})
        by `docs`, each stamped with it under `_dw`; returns how many were written."""
        client = self.client()
        try:
            return replace_documents(client[self.database][self.collection], partition, docs)
        finally:
            client.close()


def replace_documents(collection, partition: dict[str, Any], docs: Iterable[dict[str, Any]]) -> int:
    """Idempotent per partition: delete what the partition wrote before, insert the new documents."""
    stamp = {f"_dw.{k}": v for k, v in partition.items()}
    collection.delete_many(stamp)
    batch = [{**doc, "_dw": dict(partition)} for doc in docs]
    if batch:
        collection.insert_many(batch)
    return len(batch)
