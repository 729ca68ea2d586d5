-- Sales per day, region, product and currency (amounts in different currencies never mix).
-- Incremental: the days of the silver orders built after the newest this table holds, and those
-- of the orders silver replaced or removed since, are computed again whole (macros/changed_keys.sql).
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook=[
            "{{ serialize('sales_daily_summary', reads=['sales_cleaned']) }}",
            "{{ replace_changed_keys('order_date', changed_grains(ref('sales_cleaned'), 'order_date')) }}",
        ],
        indexes=[{'columns': ['order_date']}, {'columns': ['_built_at']}],
    )
}}

with

orders as (

    select * from {{ ref('sales_cleaned') }}
    {% if is_incremental() %}
    where order_date in (select key from {{ changed_keys() }})
    {% endif %}

),

summary as (

    select
        order_date,
        region,
        category,
        product,
        currency,
        count(*) as order_count,
        sum(quantity) as units_sold,
        sum(total_amount) as revenue,
        round(sum(total_amount) / nullif(sum(quantity), 0), 2) as average_unit_price,
        max(_built_at) as _built_at
    from orders
    group by order_date, region, category, product, currency

)

select * from summary
