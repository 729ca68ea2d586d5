-- Events and their amount per day and kind.
with

events as (

    select * from {{ ref('__domain___events') }}

),

summary as (

    select
        cast(occurred_at as date) as event_date,
        kind,
        count(*) as events,
        coalesce(sum(amount), 0) as amount
    from events
    group by cast(occurred_at as date), kind

)

select * from summary
