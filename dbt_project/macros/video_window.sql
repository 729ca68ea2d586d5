{#
  The video silver models, incremental for the run's arrival days (macros/changed_keys.sql). They
  are partitioned in Dagster like the bronze they read (`video_daily`, one partition per arrival
  day): a run passes its window, one day or a range, as DW_MIN_DATE/DW_MAX_DATE
  (macros/partition_window.sql); an unpartitioned run passes all time and rebuilds every day.
#}

{# A condition on `column` (an arrival date): it is one of the run's days (all time without a window). #}
{% macro video_run_days(column) -%}
    ({{ column }} >= ({{ window_start() }})::date and {{ column }} < ({{ window_end() }})::date)
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

{#
  For each key the run rebuilds, the latest arrival day before or after its window that holds a
  row of it (null for none): with the window's own rows, that day's rows hold the key's latest
  version. Two index lookups per key (bronze's index on `btrim(<key>), arrival_date`), not every
  day's rows: the content catalog is sent whole every day, so each key has a row on every day.
#}
{% macro video_latest_day_outside(bronze, key) -%}
    select
        keys.key,
        greatest(
            (select max(b.arrival_date) from {{ bronze }} as b
             where btrim(b.{{ key }}) = keys.key and b.arrival_date < ({{ window_start() }})::date),
            (select max(b.arrival_date) from {{ bronze }} as b
             where btrim(b.{{ key }}) = keys.key and b.arrival_date >= ({{ window_end() }})::date)
        ) as arrival_date
    from {{ changed_keys() }} as keys
{%- endmacro %}
