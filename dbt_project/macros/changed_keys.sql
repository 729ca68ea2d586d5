{#
  Silver models that keep the latest bronze row per key (sales orders; video users, sessions,
  content) and their gold models, incremental for the run's partition (a blob, a range of days).

  A run's silver model rebuilds the keys the run touched: the keys of the partition's bronze rows,
  and the keys whose silver row came from the partition (a re-loaded blob or day may have dropped
  them). Its pre-hook (`replace_changed_keys`) lists them once in a temporary table (the model's
  SQL reads it: the same keys whatever commits meanwhile), notes the grains of the rows it is
  about to replace in `<model>_replaced_<column>` (the days, the content items), and deletes
  them; the model appends the latest bronze row of each key that bronze still holds, read
  through the key's index on bronze. A key no bronze row holds any more stays deleted.

  A gold model rebuilds the grains (days, content items) of the silver rows built after the
  newest it holds (`_built_at`) and those noted as replaced since (`changed_grains`), so a row
  that moved to another day leaves the old one too, and a run that failed before gold is caught up
  by the next.
#}

{# The temporary table of the keys the model's run rebuilds (dropped at the end of its transaction). #}
{% macro changed_keys() -%}
    pg_temp.{{ this.identifier }}_changed_keys
{%- endmacro %}

{#
  The pre-hook. Always: the tables noting `replaced` columns (name: type) exist. In an incremental
  run: `keys_sql` (one column, `key`) into changed_keys(); the `replaced` values of those keys'
  rows noted with the time (after serialize(): later than every silver row built before); then
  those rows deleted.
#}
{% macro replace_changed_keys(key, keys_sql, replaced={}) -%}
    {%- for column, type in replaced.items() %}
    create table if not exists {{ replaced_relation(this, column) }} (
        {{ column }} {{ type }} primary key,
        replaced_at timestamptz not null
    );
    {%- endfor %}
    {%- if is_incremental() %}
    create temporary table {{ changed_keys() }} on commit drop as
    select distinct key from ({{ keys_sql }}) as keys where key is not null;
    analyze {{ changed_keys() }};
    {%- for column in replaced %}
    insert into {{ replaced_relation(this, column) }} ({{ column }}, replaced_at)
    select {{ column }}, clock_timestamp() from (
        select distinct {{ column }} from {{ this }}
        where {{ key }} in (select key from {{ changed_keys() }}) and {{ column }} is not null
    ) as replaced
    on conflict ({{ column }}) do update set replaced_at = excluded.replaced_at;
    {%- endfor %}
    delete from {{ this }} where {{ key }} in (select key from {{ changed_keys() }})
    {%- endif %}
{%- endmacro %}

{# The table noting the `column` values of the rows `model` replaced or removed, and when (last). #}
{% macro replaced_relation(model, column) -%}
    {{ model.schema }}.{{ model.identifier }}_replaced_{{ column }}
{%- endmacro %}

{#
  The `column` values (days, content items) a gold model rebuilds, as `key`: those of the rows of
  `silver` built after the newest `_built_at` the gold model holds, and those `silver` replaced since.
#}
{% macro changed_grains(silver, column) -%}
    {%- set since = "(select coalesce(max(_built_at), '-infinity') from " ~ this ~ ")" -%}
    select {{ column }} as key from {{ silver }} where _built_at > {{ since }}
    union
    select {{ column }} from {{ replaced_relation(silver, column) }} where replaced_at > {{ since }}
{%- endmacro %}

{#
  The same for the tests after a run: the `column` values of the rows of `silver` this dbt
  invocation built, and of those it replaced or removed (what the gold models rebuilt).
#}
{% macro grains_changed_this_run(silver, column) -%}
    select {{ column }} from {{ silver }} where {{ built_this_run() }}
    union
    select {{ column }} from {{ replaced_relation(silver, column) }} where {{ built_this_run('replaced_at') }}
{%- endmacro %}
