-- Per day, device and country: sessions, unique viewers, watch time, average completion.
with

sessions as (

    select * from {{ ref('video_viewing_sessions') }} where session_date is not null

)

select
    session_date,
    device,
    country_code,
    count(*) as sessions,
    count(distinct user_id) as unique_viewers,
    sum(watch_seconds) as watch_seconds,
    round(avg(completion_pct), 2) as avg_completion_pct
from sessions
group by session_date, device, country_code
