-- Fails when gold's revenue or order count of a day and currency differs from silver's orders.
-- Looks at the days this dbt invocation changed in silver (every day in a full build).
{{ config(meta={'dagster': {'ref': {'name': 'sales_daily_summary'}}}) }}
with days as (
    {{ grains_changed_this_run(ref('sales_cleaned'), 'order_date') }}
),

gold as (
    select order_date, currency, sum(revenue) as revenue, sum(order_count) as orders
    from {{ ref('sales_daily_summary') }}
    where order_date in (select order_date from days)
    group by order_date, currency
),

silver as (
    select order_date, currency, sum(total_amount) as revenue, count(*) as orders
    from {{ ref('sales_cleaned') }}
    where order_date in (select order_date from days)
    group by order_date, currency
)

select
    coalesce(gold.order_date, silver.order_date) as order_date,
    coalesce(gold.currency, silver.currency) as currency,
    gold.revenue as gold_revenue,
    silver.revenue as silver_revenue,
    gold.orders as gold_orders,
    silver.orders as silver_orders
from gold full outer join silver on gold.order_date = silver.order_date and gold.currency = silver.currency
where gold.revenue is distinct from silver.revenue or gold.orders is distinct from silver.orders
