-- Fails when a session's completion_pct was given but is not a number (silver made it null).
-- Depends on more than one model: attached to video_viewing_sessions as a Dagster asset check.
{{ config(meta={'dagster': {'ref': {'name': 'video_viewing_sessions'}}}) }}
select s.session_id, b.completion_pct as raw_value
from {{ ref('video_viewing_sessions') }} as s
join {{ source('bronze', 'video_viewing_sessions') }} as b
  on btrim(b.session_id) = s.session_id and b._bronze_source_file = s.source_file
where s.completion_pct is null and nullif(btrim(b.completion_pct), '') is not null
