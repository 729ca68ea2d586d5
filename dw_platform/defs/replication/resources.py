"""The lakehouse (Iceberg catalog in the warehouse database, files at DW_LAKEHOUSE_PATH)."""

import dagster as dg

from dw_platform.lib.lakehouse import Lakehouse
from dw_platform.lib.warehouse import warehouse_settings


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={"lakehouse": Lakehouse(**warehouse_settings(), path=dg.EnvVar("DW_LAKEHOUSE_PATH"))}
    )
