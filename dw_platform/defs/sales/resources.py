"""The sales domain's resources: its blob container and its Fernet keys, from the environment."""

import os

import dagster as dg

from dw_platform.lib.blob import BlobStorage, storage_credentials_from_env
from dw_platform.lib.crypto import FernetKeys


def sales_blob_storage() -> BlobStorage:
    """A connection string when one is set, else an account URL with a key or SAS token."""
    return BlobStorage(container=os.environ.get("DW_SALES_CONTAINER", "sales"), **storage_credentials_from_env())


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "sales_storage": sales_blob_storage(),
            "sales_keys": FernetKeys(fernet_keys=dg.EnvVar("DW_SALES_FERNET_KEYS")),
        }
    )
