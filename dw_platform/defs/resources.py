"""Resources shared by every domain. Connection settings come from the environment (or .env)."""

import os

import dagster as dg

from dw_platform.lib.dbt import DBT_PROJECT, DbtCli
from dw_platform.lib.odbc import OdbcSource
from dw_platform.lib.warehouse import PostgresWarehouse, warehouse_settings


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "warehouse": PostgresWarehouse(**warehouse_settings()),
            "customer_source": OdbcSource(
                connection_string=dg.EnvVar("DW_CUSTOMER_ODBC"),
                dialect=os.environ.get("DW_CUSTOMER_DIALECT", "mssql"),
                name="customer_crm",
            ),
            # dbt through `dw-dbt`: killed with the run worker that started it (lib/dbt_invocations.py).
            "dbt": DbtCli(project_dir=DBT_PROJECT, dbt_executable="dw-dbt"),
        }
    )
