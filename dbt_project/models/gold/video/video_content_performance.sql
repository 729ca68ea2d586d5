-- Per content item: views (sessions), unique viewers, watch time, average completion, and the
-- rank by views (ties broken by unique viewers, then content_id). Items never watched are listed
-- with zero views.
with

content as (

    select * from {{ ref('video_content') }}

),

sessions as (

    select * from {{ ref('video_viewing_sessions') }}

),

per_content as (

    select
        content.content_id,
        content.title,
        content.content_type,
        count(sessions.session_id) as views,
        count(distinct sessions.user_id) as unique_viewers,
        coalesce(sum(sessions.watch_seconds), 0) as watch_seconds,
        round(avg(sessions.completion_pct), 2) as avg_completion_pct
    from content
    left join sessions on sessions.content_id = content.content_id
    group by content.content_id, content.title, content.content_type

)

select
    *,
    row_number() over (order by views desc, unique_viewers desc, content_id) as views_rank
from per_content
