"""`dw new-domain NAME --owner TEAM`: a new domain from the template in `templates/domain/`.

Every template file is written to the same path in the project with `__domain__` replaced by the
name and `__DOMAIN__` by its upper case (in paths and text); the template's `.env.example` is
appended to the project's. A migration of the template (`dw_platform/migrations/NNNN_...`) gets
the project's next migration number. The domain is then registered in `dw_platform/domains.py`. Nothing is
written when the name is taken, not a plain lower-case word (it names a Python package, a Dagster
group, dbt folders, tables and a blob container) or a file would be overwritten.
"""

from __future__ import annotations

import re
from pathlib import Path

from dw_platform.lib.paths import PROJECT_ROOT

NAME = re.compile(r"[a-z][a-z0-9]{2,29}")
OWNER = re.compile(r"team:[a-z0-9_-]+|[^@\s]+@[^@\s]+\.[^@\s]+")
REGISTRY_END = "    # `dw new-domain` adds new domains above this line.\n"
ENTRY = """    Domain(
        name="{name}",
        owner="{owner}",
        services=("postgres", "azurite"),  # the landing zone's blob container is Azurite's when embedded
        samples="dw_platform.samples.{name}",
        landing_zone="dw_platform.{name}.drop",
    ),
"""


def fill(text: str, name: str) -> str:
    return text.replace("__domain__", name).replace("__DOMAIN__", name.upper())


def next_migration(root: Path) -> str:
    """The number the project's next migration takes (dw_platform/lib/migrations.py)."""
    folder = root / "dw_platform" / "migrations"
    numbers = [int(p.name[:4]) for p in folder.glob("[0-9][0-9][0-9][0-9]_*.sql")] if folder.is_dir() else []
    return f"{max(numbers, default=0) + 1:04d}"


def create(name: str, owner: str, root: Path = PROJECT_ROOT) -> list[Path]:
    """Write the domain `name` from `root`/templates/domain into `root`; returns the files written."""
    if not NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a lower-case word of letters and digits (3-30, starting with a letter)")
    if not OWNER.fullmatch(owner):
        raise ValueError(f"owner {owner!r} is neither team:<name> nor an email address")
    registry = root / "dw_platform" / "domains.py"
    text = registry.read_text()
    if REGISTRY_END not in text:
        raise ValueError(f"{registry} lacks the line {REGISTRY_END.strip()!r} to add the domain above")
    if f'name="{name}"' in text or (root / "dw_platform" / "defs" / name).exists():
        raise ValueError(f"a domain {name!r} exists already")
    if (root / "dw_platform" / name).exists():  # its engine package would go there
        raise ValueError(f"dw_platform/{name} exists already: choose another name")
    template = root / "templates" / "domain"
    number = next_migration(root)
    files = dict(
        sorted(
            (
                root
                / fill(str(source.relative_to(template)), name).replace("migrations/NNNN_", f"migrations/{number}_"),
                fill(source.read_text(), name).replace("NNNN_", f"{number}_"),
            )
            for source in template.rglob("*")
            if source.is_file() and source.name != ".env.example" and "__pycache__" not in source.parts
        )
    )
    taken = [str(path.relative_to(root)) for path in files if path.exists()]
    if taken:
        raise ValueError(f"would overwrite {', '.join(taken)}")
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    registry.write_text(text.replace(REGISTRY_END, ENTRY.format(name=name, owner=owner) + REGISTRY_END))
    settings = root / ".env.example"
    settings.write_text(settings.read_text() + fill((template / ".env.example").read_text(), name))
    return [*files, registry, settings]
