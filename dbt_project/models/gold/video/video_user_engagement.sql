-- Per user and day: sessions, watch time, completion rate (% of sessions with a known
-- completion that reached 90%). Sessions without a parseable start time have no day and are
-- left out (silver's tests fail on them).
-- Incremental: the days of the sessions silver built after the newest this table holds, and those
-- of the sessions silver replaced or removed since, are computed again whole (macros/changed_keys.sql).
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook=[
            "{{ serialize('video_user_engagement', reads=['video_viewing_sessions']) }}",
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
    user_id,
    session_date,
    count(*) as sessions,
    count(distinct content_id) as distinct_titles,
    sum(watch_seconds) as watch_seconds,
    round(sum(watch_seconds) / 60.0, 2) as watch_minutes,
    count(*) filter (where is_completed) as completed_sessions,
    round(100.0 * count(*) filter (where is_completed) / nullif(count(completion_pct), 0), 2) as completion_rate_pct,
    max(_built_at) as _built_at
from sessions
group by user_id, session_date
