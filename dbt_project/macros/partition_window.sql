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
  Test `where` configs may name what the run's window changed, so a test after a partition reads
  only that (dbt's documented way to give tests a dynamic where): __window_start__ and
  __window_end__ become the window's bounds, __changed_customers__ the customers it changed.
#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where -%}
        {%- set where = where
            | replace('__window_start__', window_start())
            | replace('__window_end__', window_end()) -%}
        {%- if '__changed_customers__' in where -%}
            {#- The silver table by name, not ref(): dbt allows a ref only where it was seen while parsing. -#}
            {%- set silver = api.Relation.create(
                database=target.database, schema='silver', identifier='customer_profile_standardized') -%}
            {%- set changed = '(select customer_id from (' ~ customer_changes(silver) ~ ') as changed_customers)' -%}
            {%- set where = where | replace('__changed_customers__', changed) -%}
        {%- endif -%}
        (select * from {{ relation }} where {{ where }}) dbt_subquery
    {%- else -%}
        {{ relation }}
    {%- endif -%}
{%- endmacro %}
