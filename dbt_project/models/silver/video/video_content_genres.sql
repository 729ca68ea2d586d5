-- Genres per content item, from the latest arrival of each item; names trimmed and title-cased.
{{ config(materialized='table') }}

with

latest as (

    select content_id, max(arrival_date) as arrival_date from {{ source('bronze', 'content') }} group by content_id

)

select distinct
    g.content_id,
    initcap(btrim(g.value)) as genre
from {{ source('bronze', 'content_genres') }} as g
join latest on latest.content_id = g.content_id and latest.arrival_date = g.arrival_date
where nullif(btrim(g.value), '') is not null
