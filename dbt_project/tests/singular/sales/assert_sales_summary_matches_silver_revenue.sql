-- Fails when gold's total revenue per currency differs from the sum of silver's orders.
with gold as (
    select currency, sum(revenue) as revenue from {{ ref('sales_daily_summary') }} group by currency
),

silver as (
    select currency, sum(total_amount) as revenue from {{ ref('sales_cleaned') }} group by currency
)

select
    coalesce(gold.currency, silver.currency) as currency, gold.revenue as gold_revenue, silver.revenue as silver_revenue
from gold full outer join silver on gold.currency = silver.currency
where gold.revenue is distinct from silver.revenue
