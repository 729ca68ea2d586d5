-- Per day, device and country: sessions, unique viewers, watch time, average completion.
-- Incremental: the days of the sessions silver built after the newest this table holds, and those
-- of the sessions silver replaced or removed since, are computed again whole (macros/changed_keys.sql).
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook=[
            "{{ serialize('video_viewing_statistics', reads=['video_viewing_sessions']) }}",
            "{{ replace_changed_keys('session_date', changed_grains(ref('video_viewing_sessions'), 'session_date')) }}",
        ],
        indexes=[{'columns': ['session_date']}, {'columns': ['_built_at']}],
    )
}}

with

sessions as (

    select * from {{ ref('video_viewing_sessions') }} where session_date is not null
    {% if is_incremental() %}
    and session_date in (select key from {{ changed_keys() }})
    {% endif %}

)

select
    session_date,
    device,
    country_code,
    count(*) as sessions,
    count(distinct user_id) as unique_viewers,
    sum(watch_seconds) as watch_seconds,
    round(avg(completion_pct), 2) as avg_completion_pct,
    max(_built_at) as _built_at
from sessions
group by session_date, device, country_code
