-- One row per content item: the latest arrival wins. Flattened from the JSON documents by the
-- bronze loader (nested objects -> prefixed columns); genres and cast are in their own tables.
{{ config(materialized='table') }}

with

source as (

    select * from {{ source('bronze', 'content') }}

),

ranked as (

    select
        *,
        row_number() over (partition by content_id order by arrival_date desc, _bronze_load_ts desc, source_line desc)
            as version_rank
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
