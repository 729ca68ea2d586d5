{#
  The run's partition window [DW_MIN_DATE, DW_MAX_DATE) as timestamp literals (UTC, end exclusive),
  set by dw_platform.lib.dbt.window_env; unset, all time. Read only when dbt executes, never
  while it parses: the manifest then does not depend on the window, and a new partition costs no
  re-parse.
#}
{% macro window_start() -%}
    '{{ env_var("DW_MIN_DATE", "1900-01-01 00:00:00") if execute else "1900-01-01 00:00:00" }}'::timestamp
{%- endmacro %}

{% macro window_end() -%}
    '{{ env_var("DW_MAX_DATE", "9999-12-31 00:00:00") if execute else "9999-12-31 00:00:00" }}'::timestamp
{%- endmacro %}

{#
  One incremental model at a time (per `name`) from here to the end of its transaction: a model that
  reads its own table to decide what to replace (an SCD2 dimension, delete+insert on a key) must not
  interleave with the same model of another run. A pre-hook: it runs inside the model's transaction.
#}
{% macro serialize(name) -%}
    select pg_advisory_xact_lock(hashtextextended('dw_platform.dbt.{{ name }}', 0))
{%- endmacro %}

{#
  Test `where` configs may name the run's window: __window_start__ and __window_end__ become its
  bounds when the test runs (dbt's documented way to give tests a dynamic where).
#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where -%}
        {%- set where = where | replace('__window_start__', window_start()) | replace('__window_end__', window_end()) -%}
        (select * from {{ relation }} where {{ where }}) dbt_subquery
    {%- else -%}
        {{ relation }}
    {%- endif -%}
{%- endmacro %}
