-- Fails when a summary row has a negative or zero order count, or negative units or revenue.
-- Looks at the days this dbt invocation changed in silver (every day in a full build).
{{ config(meta={'dagster': {'ref': {'name': 'sales_daily_summary'}}}) }}
select *
from {{ ref('sales_daily_summary') }}
where order_date in ({{ grains_changed_this_run(ref('sales_cleaned'), 'order_date') }})
  and (order_count <= 0 or units_sold < 0 or revenue < 0)
