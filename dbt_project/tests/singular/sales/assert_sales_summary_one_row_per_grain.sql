-- Fails when the summary holds two rows for one day, region, category, product and currency.
select order_date, region, category, product, currency, count(*) as row_count
from {{ ref('sales_daily_summary') }}
group by order_date, region, category, product, currency
having count(*) > 1
