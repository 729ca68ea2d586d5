-- One row per user: the latest version wins (updated_at, then the newest load, then the
-- later line). Dates typed, categories normalized; missing values made explicit:
-- country and subscription tier 'unknown', email and dates null.
-- Incremental by arrival day (partitioned like bronze, `video_daily`: the run's window of days,
-- one or a range; all time in an unpartitioned run): the users of the window's rows, and those
-- whose row arrived in it, are rebuilt from every day's rows of them (macros/changed_keys.sql,
-- macros/video_window.sql).
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['video_daily'],
        meta={'partition_column': 'arrival_date'},
        pre_hook=[
            "{{ serialize('video_users') }}",
            "{{ create_video_safe_casts() }}",
            "{{ replace_changed_keys('user_id', video_changed_keys(source('bronze', 'video_users'), 'user_id')) }}",
        ],
        indexes=[
            {'columns': ['user_id']},
            {'columns': ['arrival_date']},
            {'columns': ['_built_at']},
        ],
    )
}}

with

source as (

    select * from {{ source('bronze', 'video_users') }}
    {% if is_incremental() %}
    where btrim(user_id) in (select key from {{ changed_keys() }})
    {% endif %}

),

typed as (

    select
        btrim(user_id) as user_id,
        nullif(lower(btrim(email)), '') as email,
        {{ video_country('country') }} as country_code,
        case lower(btrim(coalesce(subscription_tier, '')))
            when 'free' then 'free'
            when 'basic' then 'basic'
            when 'standard' then 'standard'
            when 'premium' then 'premium'
            when '' then 'unknown'
            else 'other'
        end as subscription_tier,
        public.dw_try_timestamptz(signup_date)::date as signup_date,
        public.dw_try_timestamptz(updated_at) as updated_at,
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
            partition by user_id
            order by updated_at desc nulls last, loaded_at desc, arrival_date desc, source_line desc
        ) as version_rank
    from typed

)

select
    user_id, email, country_code, subscription_tier, signup_date, updated_at, arrival_date, source_file, source_line,
    loaded_at, clock_timestamp() as _built_at
from ranked
where version_rank = 1
