-- Fails when a summary row has a negative or zero order count, or negative units or revenue.
select *
from {{ ref('sales_daily_summary') }}
where order_count <= 0 or units_sold < 0 or revenue < 0
