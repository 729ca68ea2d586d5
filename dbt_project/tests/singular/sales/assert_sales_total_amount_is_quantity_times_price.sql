-- Fails when a cleaned order's total_amount is not quantity * unit_price rounded to cents.
select order_id, quantity, unit_price, total_amount
from {{ ref('sales_cleaned') }}
where total_amount <> round(quantity * unit_price, 2)
