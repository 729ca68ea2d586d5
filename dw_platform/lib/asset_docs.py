"""What the UI shows of every Python asset besides what its module declares: a link to the code
that builds it, and its columns with their descriptions (dbt models get both from dagster-dbt).

- Code references: each asset links to its function (`dg.with_source_code_references`); with a
  repository URL configured, every link, dbt models' `.sql` files included, opens that file in the
  repository instead (`dg.link_code_references_to_git`).
- Column descriptions: a bronze table is documented once, as a source of the dbt project
  (`dbt_project/models/bronze/__sources.yml`, which dbt docs read too); the asset that loads it
  gets that column schema as its definition metadata. The UI adds those descriptions to the
  typed columns each materialization reports.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator

CODE_REFERENCES = "dagster/code_references"
COLUMN_SCHEMA = "dagster/column_schema"


def with_asset_docs(
    defs: dg.Definitions,
    manifest: Mapping[str, Any],
    repository_root: Path,
    git_url: str | None = None,
    git_branch: str = "main",
) -> dg.Definitions:
    """`defs` with every asset linked to its code (in the repository at `git_url`, GitHub or
    GitLab, when given) and each dbt source's documented columns on the asset of its key."""
    # These Dagster functions are beta/preview; they are used on purpose, here only, so their
    # warnings (printed at every load of the code location, 35 lines of each `make demo`) are
    # silenced for this call alone.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        extra: dict[dg.AssetKey, dict[str, Any]] = {}
        for key, references in code_references(defs, repository_root, git_url, git_branch).items():
            extra.setdefault(key, {})[CODE_REFERENCES] = references
        for key, schema in documented_columns(manifest).items():
            extra.setdefault(key, {})[COLUMN_SCHEMA] = schema
        return defs.map_asset_specs(
            func=lambda spec: spec.merge_attributes(
                metadata={
                    k: v for k, v in extra.get(spec.key, {}).items() if k == CODE_REFERENCES or k not in spec.metadata
                }
            )
        )


def code_references(
    defs: dg.Definitions, repository_root: Path, git_url: str | None, git_branch: str
) -> dict[dg.AssetKey, Any]:
    """Each asset's code references: its own (a dbt model's .sql file) or else its function's."""
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    referenced = [
        a if any(CODE_REFERENCES in m for m in a.metadata_by_key.values()) else dg.with_source_code_references([a])[0]
        for a in assets
    ]
    if git_url:
        referenced = dg.link_code_references_to_git(
            referenced,
            git_url=git_url,
            git_branch=git_branch,
            file_path_mapping=dg.AnchorBasedFilePathMapping(
                local_file_anchor=repository_root / "pyproject.toml", file_anchor_path_in_repository="pyproject.toml"
            ),
        )
    return {key: m[CODE_REFERENCES] for a in referenced for key, m in a.metadata_by_key.items() if CODE_REFERENCES in m}


def documented_columns(manifest: Mapping[str, Any]) -> dict[dg.AssetKey, dg.TableSchema]:
    """The column schema of each dbt source that documents its columns, by the source's asset key."""
    translator = DagsterDbtTranslator()
    specs = (translator.get_asset_spec(manifest, unique_id, None) for unique_id in manifest.get("sources", {}))
    return {spec.key: spec.metadata[COLUMN_SCHEMA] for spec in specs if COLUMN_SCHEMA in spec.metadata}
