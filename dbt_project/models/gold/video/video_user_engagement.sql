-- Per user and day: sessions, watch time, completion rate (% of sessions with a known
-- completion that reached 90%). Sessions without a parseable start time have no day and are
-- left out (silver's tests fail on them).
with

sessions as (

    select * from {{ ref('video_viewing_sessions') }} where session_date is not null

)

select
    user_id,
    session_date,
    count(*) as sessions,
    count(distinct content_id) as distinct_titles,
    sum(watch_seconds) as watch_seconds,
    round(sum(watch_seconds) / 60.0, 2) as watch_minutes,
    count(*) filter (where is_completed) as completed_sessions,
    round(100.0 * count(*) filter (where is_completed) / nullif(count(completion_pct), 0), 2) as completion_rate_pct
from sessions
group by user_id, session_date
