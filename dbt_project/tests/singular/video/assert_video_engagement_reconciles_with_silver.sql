-- Fails when gold's sessions or watch time per day differ from silver's, or when gold has a
-- Depends on more than one model: attached to video_user_engagement as a Dagster asset check.
{{ config(meta={'dagster': {'ref': {'name': 'video_user_engagement'}}}) }}
-- (user, day) row count other than silver's distinct (user, day) pairs.
with gold as (
    select session_date, sum(sessions) as sessions, sum(watch_seconds) as watch_seconds, count(*) as rows_
    from {{ ref('video_user_engagement') }} group by session_date
),

silver as (
    select session_date, count(*) as sessions, sum(watch_seconds) as watch_seconds,
           count(distinct user_id) as rows_
    from {{ ref('video_viewing_sessions') }} where session_date is not null group by session_date
)

select coalesce(gold.session_date, silver.session_date) as session_date,
       gold.sessions as gold_sessions, silver.sessions as silver_sessions,
       gold.rows_ as gold_rows, silver.rows_ as expected_rows
from gold full outer join silver on gold.session_date = silver.session_date
where gold.sessions is distinct from silver.sessions
   or gold.watch_seconds is distinct from silver.watch_seconds
   or gold.rows_ is distinct from silver.rows_
