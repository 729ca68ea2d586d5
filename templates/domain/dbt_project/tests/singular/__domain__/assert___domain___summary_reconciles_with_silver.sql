-- Fails when gold's events or amount per day differ from silver's: an event lost or counted twice
-- between the layers. Depends on more than one model: attached to __domain___daily_summary as a
-- Dagster asset check.
{{ config(meta={'dagster': {'ref': {'name': '__domain___daily_summary'}}}) }}
with

gold as (

    select event_date, sum(events) as events, sum(amount) as amount
    from {{ ref('__domain___daily_summary') }}
    group by event_date

),

silver as (

    select cast(occurred_at as date) as event_date, count(*) as events, coalesce(sum(amount), 0) as amount
    from {{ ref('__domain___events') }}
    group by cast(occurred_at as date)

)

select
    coalesce(gold.event_date, silver.event_date) as event_date,
    gold.events as gold_events,
    silver.events as silver_events,
    gold.amount as gold_amount,
    silver.amount as silver_amount
from gold
full outer join silver on gold.event_date = silver.event_date
where gold.events is distinct from silver.events or gold.amount is distinct from silver.amount
