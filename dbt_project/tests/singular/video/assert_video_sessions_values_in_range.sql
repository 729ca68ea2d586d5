-- Fails when a session's watch time is negative or its completion is outside 0..100 %.
select session_id, watch_seconds, completion_pct
from {{ ref('video_viewing_sessions') }}
where watch_seconds < 0 or completion_pct < 0 or completion_pct > 100
