-- Fails when a gold video metric is negative or a completion rate/average exceeds 100 %.
-- Depends on more than one model: attached to video_user_engagement as a Dagster asset check.
{{ config(meta={'dagster': {'ref': {'name': 'video_user_engagement'}}}) }}
select 'engagement' as model, user_id as grain, completion_rate_pct as rate
from {{ ref('video_user_engagement') }}
where sessions < 0 or watch_seconds < 0 or completed_sessions < 0
   or completion_rate_pct < 0 or completion_rate_pct > 100
union all
select 'statistics', session_date::text || '/' || device || '/' || country_code, avg_completion_pct
from {{ ref('video_viewing_statistics') }}
where sessions < 0 or unique_viewers < 0 or watch_seconds < 0 or avg_completion_pct < 0 or avg_completion_pct > 100
union all
select 'content', content_id, avg_completion_pct
from {{ ref('video_content_performance') }}
where views < 0 or unique_viewers < 0 or watch_seconds < 0 or avg_completion_pct < 0 or avg_completion_pct > 100
