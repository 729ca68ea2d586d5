-- Fails when the viewing statistics' sessions per day differ from silver's.
-- Depends on more than one model: attached to video_viewing_statistics as a Dagster asset check.
{{ config(meta={'dagster': {'ref': {'name': 'video_viewing_statistics'}}}) }}
with gold as (
    select session_date, sum(sessions) as sessions from {{ ref('video_viewing_statistics') }} group by session_date
),

silver as (
    select session_date, count(*) as sessions from {{ ref('video_viewing_sessions') }}
    where session_date is not null group by session_date
)

select
    coalesce(gold.session_date, silver.session_date) as session_date,
    gold.sessions as gold_sessions,
    silver.sessions as silver_sessions
from gold full outer join silver on gold.session_date = silver.session_date
where gold.sessions is distinct from silver.sessions
