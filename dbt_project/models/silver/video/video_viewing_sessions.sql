-- One row per viewing session: the latest load wins. started_at typed (UTC), numbers typed,
-- device and country normalized. Missing values: device/country 'unknown'; watch_seconds
-- missing -> 0; completion_pct missing stays null (unknown, not 0) and is left out of averages.
-- Values that do not parse stay null, and the model's tests fail on them.
-- Incremental by arrival day, as video_users; the days of the sessions it replaces are noted for
-- gold (macros/changed_keys.sql).
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['video_daily'],
        meta={'partition_column': 'arrival_date'},
        pre_hook=[
            "{{ serialize('video_viewing_sessions') }}",
            "{{ create_video_safe_casts() }}",
            "{{ replace_changed_keys('session_id', video_changed_keys(source('bronze', 'video_viewing_sessions'), 'session_id'), replaced={'session_date': 'date'}) }}",
        ],
        indexes=[
            {'columns': ['session_id']},
            {'columns': ['arrival_date']},
            {'columns': ['session_date']},
            {'columns': ['_built_at']},
        ],
    )
}}

with

source as (

    select * from {{ source('bronze', 'video_viewing_sessions') }}
    {% if is_incremental() %}
    where btrim(session_id) in (select key from {{ changed_keys() }})
    {% endif %}

),

typed as (

    select
        btrim(session_id) as session_id,
        btrim(user_id) as user_id,
        btrim(content_id) as content_id,
        {{ video_device('device') }} as device,
        {{ video_country('country') }} as country_code,
        public.dw_try_timestamptz(started_at) as started_at,
        coalesce(public.dw_try_numeric(watch_seconds), case when nullif(btrim(watch_seconds), '') is null then 0 end)
            as watch_seconds,
        public.dw_try_numeric(completion_pct) as completion_pct,
        arrival_date,
        _bronze_source_file as source_file,
        _bronze_load_ts as loaded_at,
        source_line
    from source

),

ranked as (

    select
        *,
        row_number() over (
            partition by session_id
            order by loaded_at desc, arrival_date desc, source_line desc
        ) as version_rank
    from typed

)

select
    session_id, user_id, content_id, device, country_code, started_at,
    (started_at at time zone 'UTC')::date as session_date,
    watch_seconds, completion_pct,
    completion_pct >= 90 as is_completed,
    arrival_date, source_file, loaded_at, clock_timestamp() as _built_at
from ranked
where version_rank = 1
