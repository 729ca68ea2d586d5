"""The SoftCart domain's resources, from the environment: its MariaDB/MySQL source over ODBC and
the landing zone its web servers' access logs arrive in."""

import os

import dagster as dg

from dw_platform.lib.landing import LandingZone, landing_zone_from_env
from dw_platform.lib.odbc import OdbcSource


def softcart_source() -> OdbcSource:
    """DW_SOFTCART_ODBC (a secret: it may carry a password); with the embedded default, the
    project's own MariaDB. DW_SOFTCART_DIALECT decides identifier quoting (mysql, or db2)."""
    return OdbcSource(
        connection_string=dg.EnvVar("DW_SOFTCART_ODBC"),
        dialect=os.environ.get("DW_SOFTCART_DIALECT", "mysql"),
        name="softcart",
    )


def weblogs_landing_zone() -> LandingZone:
    """DW_SOFTCART_WEBLOGS_DIR (a local folder) when set, else the blob container
    DW_SOFTCART_WEBLOGS_CONTAINER (default `weblogs`)."""
    return landing_zone_from_env("DW_SOFTCART_WEBLOGS_DIR", "DW_SOFTCART_WEBLOGS_CONTAINER", "weblogs")


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"softcart_source": softcart_source(), "softcart_weblogs": weblogs_landing_zone()})
