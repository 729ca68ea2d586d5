-- One row per parsed access-log line, typed: client address as inet, request time in UTC,
-- status and size as integers ('-' size = 0 bytes, as CLF writes it), '-' fields as null, \"
-- and \\ escapes undone, and a bot flag from the user agent (seed softcart_bot_agents).
-- Incremental by file (the asset's partition): the pre-hook removes the rows of the run's files,
-- the model adds what bronze now holds for them (macros/partition_window.sql, run_partition_loads).
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook=[
        "{{ create_web_safe_casts() }}",
        "{{ serialize('web_requests') }}",
        "{% if is_incremental() %}delete from {{ this }} where source_file in "
        ~ "(select source from ({{ run_partition_loads('bronze/web_access_log') }}) as loads){% endif %}",
    ],
    indexes=[
        {'columns': ['source_file', 'line_number'], 'unique': true},
        {'columns': ['requested_at']},
        {'columns': ['request_date']},
    ]
) }}

with

source as (

    select * from {{ source('bronze', 'web_access_log') }}
    {% if is_incremental() %}
    where _bronze_source_file in (select source from ({{ run_partition_loads('bronze/web_access_log') }}) as loads)
    {% endif %}

),

bots as (

    select lower(pattern) as pattern from {{ ref('softcart_bot_agents') }}

),

typed as (

    select
        s._bronze_source_file as source_file,
        s.line_number,
        s.client_ip as client,
        public.dw_try_inet(s.client_ip) as client_ip,
        nullif(s.identity, '-') as identity,
        nullif(s.remote_user, '-') as remote_user,
        to_timestamp(s.time_local, 'DD/Mon/YYYY:HH24:MI:SS TZHTZM') as requested_at,
        s.request,
        s.method,
        replace(replace(s.path, '\"', '"'), '\\', '\') as path,
        split_part(replace(replace(s.path, '\"', '"'), '\\', '\'), '?', 1) as path_without_query,
        s.protocol,
        s.status::integer as status,
        case when s.bytes_sent = '-' then 0 else s.bytes_sent::bigint end as bytes_sent,
        nullif(replace(replace(s.referrer, '\"', '"'), '\\', '\'), '-') as referrer,
        nullif(replace(replace(s.user_agent, '\"', '"'), '\\', '\'), '-') as user_agent,
        s._bronze_load_ts as loaded_at
    from source as s

)

select
    typed.*,
    (requested_at at time zone 'UTC')::date as request_date,
    extract(hour from requested_at at time zone 'UTC')::integer as request_hour,
    exists (  -- noqa: LT01, LT06
        select from bots where position(bots.pattern in lower(typed.user_agent)) > 0
    ) as is_bot,
    status >= 400 as is_error
from typed
