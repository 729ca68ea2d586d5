"""The platform's domains (one per source system), in one registry.

Each entry says who owns the domain, which embedded development servers its sources need, where
its sample data and demo step live and, if it takes files, where `dw drop` puts one. `dw demo`
runs the demo steps in this order, `dw drop` offers the domains with a landing zone, the embedded
default starts the servers the domains need, and every asset, Python or dbt, gets its group,
`domain` tag and owner from here, so the UI shows one domain's chain bronze -> silver -> gold in
one group. `dw new-domain` adds an entry (docs/adding-a-domain.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The servers `dw_platform.devenv.embedded` can start when no real one is configured: the warehouse
# PostgreSQL (always), the Azurite blob emulator, a MariaDB, and the replication source PostgreSQL.
SERVICES = ("postgres", "azurite", "mariadb", "replication_source")


@dataclass(frozen=True)
class Domain:
    name: str
    owner: str  # an email address or "team:<name>" (Dagster asset owners)
    services: tuple[str, ...]  # of SERVICES: what its sources need in the embedded default
    samples: str  # the module with its sample data and its demo step, `demo(session) -> DemoOutcome`
    landing_zone: str | None = None  # the module whose `drop(path) -> str` puts a file where it is loaded from

    def __post_init__(self):
        unknown = set(self.services) - set(SERVICES)
        if unknown:
            raise ValueError(f"domain {self.name!r}: unknown services {sorted(unknown)}; known: {SERVICES}")

    def demo_step(self) -> Callable[..., Any]:
        return importlib.import_module(self.samples).demo

    def drop(self, path: Path) -> str:
        """Put the local file `path` into the landing zone; returns where it went."""
        if self.landing_zone is None:
            raise ValueError(f"domain {self.name!r} takes no files")
        return importlib.import_module(self.landing_zone).drop(path)


REGISTRY = (
    Domain(
        name="customer",
        owner="team:crm-data",
        services=("postgres",),  # the CRM stand-in is a database on the embedded PostgreSQL
        samples="dw_platform.samples.customer",
    ),
    Domain(
        name="sales",
        owner="team:sales-data",
        services=("postgres", "azurite"),
        samples="dw_platform.samples.sales",
        landing_zone="dw_platform.sales.drop",
    ),
    Domain(
        name="video",
        owner="team:video-analytics",
        services=("postgres", "azurite"),
        samples="dw_platform.samples.video",
        landing_zone="dw_platform.video.drop",
    ),
    Domain(
        name="softcart",
        owner="team:ecommerce-data",
        services=("postgres", "mariadb", "azurite"),
        samples="dw_platform.samples.softcart",
        landing_zone="dw_platform.softcart.drop",
    ),
    Domain(
        name="replication",
        owner="team:data-platform",
        services=("postgres", "replication_source"),
        samples="dw_platform.samples.replication",
    ),
    # `dw new-domain` adds new domains above this line.
)

BY_NAME = {domain.name: domain for domain in REGISTRY}
DOMAINS = tuple(BY_NAME)  # names, in the order `dw demo` runs them
OWNERS = {domain.name: domain.owner for domain in REGISTRY}


def get(name: str) -> Domain:
    if name not in BY_NAME:
        raise ValueError(f"unknown domain {name!r}; add it to dw_platform/domains.py")
    return BY_NAME[name]


def services_needed(names: tuple[str, ...] = DOMAINS) -> set[str]:
    """The embedded servers the domains `names` need."""
    return {service for name in names for service in get(name).services}


def asset_attributes(domain: str) -> dict[str, Any]:
    """`group_name`, `tags` and `owners` for an asset of `domain` (keyword arguments of `dg.asset`)."""
    return {"group_name": domain, "tags": {"domain": domain}, "owners": [get(domain).owner]}
