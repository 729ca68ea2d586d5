-- Fails when a customer has zero or several current versions in the dimension.
select
    customer_id,
    count(*) filter (where is_current) as current_rows
from {{ ref('dim_customer_profile') }}
group by customer_id
having count(*) filter (where is_current) <> 1
