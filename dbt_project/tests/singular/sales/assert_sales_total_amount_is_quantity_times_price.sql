-- Fails when a cleaned order's total_amount is not quantity * unit_price rounded to cents.
-- Looks at the orders this dbt invocation built (every order in a full build).
select order_id, quantity, unit_price, total_amount
from {{ ref('sales_cleaned') }}
where {{ built_this_run() }} and total_amount <> round(quantity * unit_price, 2)
