"""`dw drop DOMAIN FILE`: a domain that takes files declares where they land in
`dw_platform/defs/<domain>/drop.py`, a function `drop(path) -> str` (the place it put the file)."""

from __future__ import annotations

import importlib
from pathlib import Path

DEFS = Path(__file__).resolve().parents[1] / "defs"


def droppable_domains() -> list[str]:
    return sorted(p.parent.name for p in DEFS.glob("*/drop.py"))


def drop(domain: str, path: Path) -> str:
    if not path.is_file():
        raise SystemExit(f"dw drop: {path} is not a file")
    return importlib.import_module(f"dw_platform.defs.{domain}.drop").drop(path)
