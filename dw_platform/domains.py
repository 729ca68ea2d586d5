"""The platform's domains (one per source system): how their assets are grouped, tagged and owned.

Every asset, Python or dbt, gets its group, `domain` tag and owner from here, so the UI shows one
domain's chain bronze -> silver -> gold in one group and filtering by `domain` finds all of it.
"""

from __future__ import annotations

from typing import Any

# The domains in the order `dw demo` runs them, each with its owning team.
OWNERS = {
    "customer": "team:crm-data",
    "sales": "team:sales-data",
    "video": "team:video-analytics",
    "softcart": "team:ecommerce-data",
    "replication": "team:data-platform",
}
DOMAINS = tuple(OWNERS)


def asset_attributes(domain: str) -> dict[str, Any]:
    """`group_name`, `tags` and `owners` for an asset of `domain` (keyword arguments of `dg.asset`)."""
    if domain not in OWNERS:
        raise ValueError(f"unknown domain {domain!r}; add it to dw_platform/domains.py")
    return {"group_name": domain, "tags": {"domain": domain}, "owners": [OWNERS[domain]]}
