"""The video domain's resources, from the environment: its landing zone and its raw-document store."""

import os

import dagster as dg

from dw_platform.lib.documents import MongoDocuments
from dw_platform.lib.landing import LandingZone, landing_zone_from_env


def video_landing_zone() -> LandingZone:
    """DW_VIDEO_LANDING_DIR (a local folder) when set, else the blob container DW_VIDEO_CONTAINER."""
    return landing_zone_from_env("DW_VIDEO_LANDING_DIR", "DW_VIDEO_CONTAINER", "video")


def video_documents() -> MongoDocuments:
    """MongoDB (a secret URI: it may carry a password) when DW_VIDEO_MONGODB_URI is set, else none."""
    if os.environ.get("DW_VIDEO_MONGODB_URI"):
        return MongoDocuments(
            uri=dg.EnvVar("DW_VIDEO_MONGODB_URI"),
            database=os.environ.get("DW_VIDEO_MONGODB_DATABASE", "dw_video"),
            collection="content_raw",
        )
    return MongoDocuments(database="dw_video", collection="content_raw")


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"video_landing": video_landing_zone(), "video_documents": video_documents()})
