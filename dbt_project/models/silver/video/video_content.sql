-- One row per content item (trimmed content_id): the latest arrival wins. Flattened from the JSON
-- documents by the bronze loader (nested objects -> prefixed columns); genres and cast are in their
-- own tables.
-- Incremental by arrival day (partitioned like bronze, `video_daily`). The catalog is sent whole
-- every day, so bronze holds one catalog per day: a rebuild would read them all. A run rebuilds
-- the items of its window's rows and those whose row arrived in it (macros/changed_keys.sql) from
-- the window's rows and, per item, the rows of its latest day outside the window (two lookups in
-- bronze's index on btrim(content_id), arrival_date; macros/video_window.sql): a catalog's worth,
-- whatever the history. An item no file holds any more keeps its last version; one no bronze row
-- holds any more is deleted.
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['video_daily'],
        meta={'partition_column': 'arrival_date'},
        pre_hook=[
            "{{ serialize('video_content') }}",
            "{{ replace_changed_keys('content_id', video_changed_keys(source('bronze', 'content'), 'content_id')) }}",
        ],
        indexes=[
            {'columns': ['content_id']},
            {'columns': ['arrival_date']},
        ],
    )
}}

with

{% if is_incremental() %}
latest_outside as (

    {{ video_latest_day_outside(source('bronze', 'content'), 'content_id') }}

),
{% endif %}

source as (

    {% if is_incremental() %}
    select * from {{ source('bronze', 'content') }}
    where {{ video_run_days('arrival_date') }}
    union all
    select content.* from {{ source('bronze', 'content') }} as content
    join latest_outside
        on btrim(content.content_id) = latest_outside.key and content.arrival_date = latest_outside.arrival_date
    {% else %}
    select * from {{ source('bronze', 'content') }}
    {% endif %}

),

ranked as (

    select
        *,
        row_number() over (
            partition by btrim(content_id) order by arrival_date desc, _bronze_load_ts desc, source_line desc
        ) as version_rank
    from source

)

select
    btrim(content_id) as content_id,
    coalesce(nullif(btrim(title), ''), '(untitled)') as title,
    coalesce(lower(btrim(type)), 'unknown') as content_type,
    release_year::integer as release_year,
    runtime_minutes,
    ratings_imdb,
    ratings_rotten_tomatoes,
    arrival_date,
    _bronze_source_file as source_file
from ranked
where version_rank = 1
