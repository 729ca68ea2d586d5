"""The extractor for a source's engine (the interface is `extractor.Extractor`)."""

from dw_platform.replication.extractor import Extractor
from dw_platform.replication.oracle import OracleExtractor
from dw_platform.replication.postgres import PostgresExtractor
from dw_platform.replication.sources import SourceConfig

EXTRACTORS: dict[str, type[Extractor]] = {"postgresql": PostgresExtractor, "oracle": OracleExtractor}


def extractor_for(source: SourceConfig) -> Extractor:
    return EXTRACTORS[source.engine](source)
