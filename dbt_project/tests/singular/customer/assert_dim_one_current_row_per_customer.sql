-- Fails when a customer has zero or several current versions in the dimension.
-- Looks at the customers the run's window changed (all of them in an unpartitioned run).
{{ config(meta={'dagster': {'ref': {'name': 'dim_customer_profile'}}}) }}
select
    customer_id,
    count(*) filter (where is_current) as current_rows
from {{ ref('dim_customer_profile') }}
where customer_id in (select customer_id from ({{ customer_changes() }}) as changed_customers)
group by customer_id
having count(*) filter (where is_current) <> 1
