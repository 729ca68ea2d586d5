-- Orders, units and revenue of the valid sales per month, category and country: the base the
-- summary rolls up. Incremental: the months of the fact rows built after the newest this table
-- holds are computed again whole (delete+insert on the month), so a sale that moved to another
-- category or country leaves its old cell too.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='year_month',
    pre_hook="{{ serialize('softcart_sales_monthly') }}",
    indexes=[{'columns': ['year_month']}]
) }}

with

fact as (

    select * from {{ ref('softcart_fact_sales') }}
    {% if is_incremental() %}
    where date_key / 100 in (
        select distinct changed.date_key / 100
        from {{ ref('softcart_fact_sales') }} as changed
        where changed._built_at > (select coalesce(max(_built_at), '-infinity') from {{ this }})
    )
    {% endif %}

)

select
    fact.date_key / 100 as year_month,
    fact.category_key,
    fact.country_key,
    count(*) as orders,
    sum(fact.quantity) as units,
    sum(fact.amount) as revenue,
    max(fact._built_at) as _built_at
from fact
group by fact.date_key / 100, fact.category_key, fact.country_key
