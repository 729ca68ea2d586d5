{#
  The video silver models that keep the latest bronze row per key (users, viewing sessions),
  incremental for the run's arrival days (macros/changed_keys.sql). The video models are not
  partitioned in Dagster: a one-day run of video_daily (the landing sensor's) passes its day as
  DW_PARTITION_KEYS; a range of days or an unpartitioned run passes none, and rebuilds every day.
#}

{# A condition on `column` (an arrival date): it is one of the run's days; every day without them. #}
{% macro video_run_days(column) -%}
    {%- set keys = env_var('DW_PARTITION_KEYS', '') if execute else '' -%}
    {%- if keys -%}
    {{ column }} in (select jsonb_array_elements_text('{{ keys | replace("'", "''") }}'::jsonb)::date)
    {%- else -%}
    true
    {%- endif -%}
{%- endmacro %}

{#
  The keys a run rebuilds: the trimmed `key` of the bronze rows of its days (read through the
  `arrival_date` index), and the keys whose silver row arrived on them (a re-loaded day may no
  longer hold it). The model then reads every day's rows of those keys through bronze's index on
  `btrim(<key>)` (dw_platform/video/ingest.py, key_index).
#}
{% macro video_changed_keys(bronze, key) -%}
    select btrim({{ key }}) as key from {{ bronze }} where {{ video_run_days('arrival_date') }}
    union all
    select {{ key }} from {{ this }} where {{ video_run_days('arrival_date') }}
{%- endmacro %}
