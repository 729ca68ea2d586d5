-- Genres per content item, from its latest arrival (the day of its silver.video_content row); names
-- trimmed and title-cased.
-- Incremental by arrival day, as video_content: the items of the window's rows and those whose
-- genres came from a day in it are rebuilt from their video_content row (built first in the same
-- run) and that day's genres (bronze's index on btrim(content_id), arrival_date).
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        tags=['video_daily'],
        meta={'partition_column': 'arrival_date'},
        pre_hook=[
            "{{ serialize('video_content_genres', reads=['video_content']) }}",
            "{{ replace_changed_keys('content_id', video_changed_keys(source('bronze', 'content'), 'content_id')) }}",
        ],
        indexes=[
            {'columns': ['content_id']},
            {'columns': ['arrival_date']},
        ],
    )
}}

with

content as (

    select content_id, arrival_date from {{ ref('video_content') }}
    {% if is_incremental() %}
    where content_id in (select key from {{ changed_keys() }})
    {% endif %}

)

select distinct
    content.content_id,
    initcap(btrim(g.value)) as genre,
    content.arrival_date
from content
join {{ source('bronze', 'content_genres') }} as g
    on btrim(g.content_id) = content.content_id and g.arrival_date = content.arrival_date
where nullif(btrim(g.value), '') is not null
