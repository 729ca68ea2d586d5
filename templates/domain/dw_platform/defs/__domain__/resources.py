"""The __domain__ domain's resources, from the environment: the landing zone its files arrive in."""

import dagster as dg

from dw_platform.lib.landing import LandingZone, landing_zone_from_env


def landing_zone() -> LandingZone:
    """DW___DOMAIN___LANDING_DIR (a local folder) when set, else the blob container
    DW___DOMAIN___CONTAINER (default `__domain__`) of the storage account in DW_BLOB_*."""
    return landing_zone_from_env("DW___DOMAIN___LANDING_DIR", "DW___DOMAIN___CONTAINER", "__domain__")


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"__domain___landing": landing_zone()})
