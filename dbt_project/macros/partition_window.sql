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
  `reads`: models whose changes this one reads by time (`_built_at`): they cannot commit meanwhile
  (each statement then sees the same rows of them), while other readers may read them too.
#}
{% macro serialize(name, reads=[]) -%}
    select pg_advisory_xact_lock(hashtextextended('dw_platform.dbt.{{ name }}', 0))
    {%- for model in reads %},
        pg_advisory_xact_lock_shared(hashtextextended('dw_platform.dbt.{{ model }}', 0))
    {%- endfor %}
{%- endmacro %}

{#
  Test `where` configs may name what the run's window changed, so a test after a partition reads
  only that (dbt's documented way to give tests a dynamic where): __window_start__ and
  __window_end__ become the window's bounds, __changed_customers__ the customers it changed,
  __changed_customer_versions__ a condition true for the silver customer versions it changed,
  __web_log_files__ the run's access-log files, __web_changed_days__ the days of traffic they changed,
  `_built_at >= __run_started_at__` the rows this dbt invocation built.
#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where -%}
        {%- set where = where
            | replace('__window_start__', window_start())
            | replace('__window_end__', window_end())
            | replace('_built_at >= __run_started_at__', built_this_run()) -%}
        {%- if '__web_log_files__' in where -%}
            {%- set files = '(select source from (' ~ run_partition_loads('bronze/web_access_log') ~ ') as loads)' -%}
            {%- set where = where | replace('__web_log_files__', files) -%}
        {%- endif -%}
        {%- if '__web_changed_days__' in where -%}
            {%- set silver = api.Relation.create(
                database=target.database, schema='silver', identifier='web_requests') -%}
            {%- set where = where | replace('__web_changed_days__', '(' ~ web_changed_days(silver) ~ ')') -%}
        {%- endif -%}
        {%- if '__changed_customer_versions__' in where -%}
            {%- set where = where | replace('__changed_customer_versions__', customer_changed_versions()) -%}
        {%- endif -%}
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

{#
  The latest bronze load of each of the run's partitions of `asset_key` (e.g. 'bronze/sales'; the
  loader's ledger, dw_platform/lib/bronze.py), for
  assets partitioned by file or blob: a partition's rows are replaced as a whole, so they are the
  rows of that load (`batch_id`) and carry its `source` as _bronze_source_file. The run's partition
  keys come as a JSON list in DW_PARTITION_KEYS (dw_platform.lib.dbt.partition_keys_env); unset or
  empty, every partition (an unpartitioned run).
#}
{% macro run_partition_loads(asset_key) -%}
    {%- set keys = env_var('DW_PARTITION_KEYS', '') if execute else '' -%}
    select distinct on (partition_key) source, batch_id
    from bronze.batch_ledger
    where asset_key = '{{ asset_key }}'
      and status = 'succeeded'
    {%- if keys %}
      and partition_key in (select jsonb_array_elements_text('{{ keys | replace("'", "''") }}'::jsonb))
    {%- endif %}
    order by partition_key, finished_at desc
{%- endmacro %}

{# Rows built by this dbt invocation: their `_built_at` is no earlier than its start. #}
{% macro built_this_run(column='_built_at') -%}
    {{ column }} >= '{{ run_started_at }}'::timestamptz
{%- endmacro %}
