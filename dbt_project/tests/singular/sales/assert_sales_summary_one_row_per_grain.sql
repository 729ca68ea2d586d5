-- Fails when the summary holds two rows for one day, region, category, product and currency.
-- Looks at the days this dbt invocation changed in silver (every day in a full build).
{{ config(meta={'dagster': {'ref': {'name': 'sales_daily_summary'}}}) }}
select order_date, region, category, product, currency, count(*) as row_count
from {{ ref('sales_daily_summary') }}
where order_date in ({{ grains_changed_this_run(ref('sales_cleaned'), 'order_date') }})
group by order_date, region, category, product, currency
having count(*) > 1
