"""The sales domain's resources: its blob container and its Fernet keys, from the environment."""

import os

import dagster as dg

from dw_platform.lib.blob import BlobStorage
from dw_platform.lib.crypto import FernetKeys


def sales_blob_storage() -> BlobStorage:
    """A connection string when one is set, else an account URL with a key or SAS token."""
    container = os.environ.get("DW_SALES_CONTAINER", "sales")
    if os.environ.get("DW_BLOB_ACCOUNT_URL") and not os.environ.get("DW_BLOB_CONNECTION_STRING"):
        return BlobStorage(
            container=container,
            account_url=dg.EnvVar("DW_BLOB_ACCOUNT_URL"),
            credential=dg.EnvVar("DW_BLOB_CREDENTIAL"),
        )
    return BlobStorage(container=container, connection_string=dg.EnvVar("DW_BLOB_CONNECTION_STRING"))


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "sales_storage": sales_blob_storage(),
            "sales_keys": FernetKeys(fernet_keys=dg.EnvVar("DW_SALES_FERNET_KEYS")),
        }
    )
