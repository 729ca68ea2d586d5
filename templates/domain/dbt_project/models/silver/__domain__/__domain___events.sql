-- One row per event: the latest arrival of each event_id wins (a later file, or a later line).
-- Bronze keeps each value as it arrived (text); here they are trimmed, typed (bronze let only
-- values that cast through) and kind lower-cased, 'unknown' when missing.
{{ config(materialized='table', indexes=[{'columns': ['event_id'], 'unique': true}]) }}

with

source as (

    select * from {{ source('bronze', '__domain___events') }}

),

ranked as (

    select
        *,
        row_number() over (
            partition by trim(event_id)
            order by arrival_date desc, _bronze_load_ts desc, source_line desc
        ) as arrival_rank
    from source

),

typed as (

    select
        trim(event_id) as event_id,
        cast(trim(occurred_at) as timestamp) as occurred_at,
        coalesce(lower(nullif(trim(kind), '')), 'unknown') as kind,
        cast(nullif(trim(amount), '') as numeric(18, 2)) as amount,
        arrival_date
    from ranked
    where arrival_rank = 1

)

select * from typed
