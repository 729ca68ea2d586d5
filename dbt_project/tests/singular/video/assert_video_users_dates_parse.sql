-- Fails when a user's signup_date or updated_at was given but is not a date (silver made it null).
-- Compares each silver row with the very bronze row it was built from (source_file + source_line).
{{ config(meta={'dagster': {'ref': {'name': 'video_users'}}}) }}
select u.user_id, b.signup_date as raw_signup_date, b.updated_at as raw_updated_at
from {{ ref('video_users') }} as u
join {{ source('bronze', 'video_users') }} as b
  on b._bronze_source_file = u.source_file and b.source_line = u.source_line
where (u.signup_date is null and nullif(btrim(b.signup_date), '') is not null)
   or (u.updated_at is null and nullif(btrim(b.updated_at), '') is not null)
