"""What sqlfluff's jinja templater sees as dbt's `adapter` (see .sqlfluff: library_path): the lint
renders models without a warehouse, so a relation has no columns yet."""


def get_columns_in_relation(relation):
    return []
