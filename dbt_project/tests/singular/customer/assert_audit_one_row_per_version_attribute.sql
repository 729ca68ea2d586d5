-- Fails when a version has more than one audit row for the same attribute.
-- Looks at the customers the run's window changed (all of them in an unpartitioned run).
{{ config(meta={'dagster': {'ref': {'name': 'fact_customer_profile_audit'}}}) }}
select
    customer_sk,
    attribute_name,
    count(*) as row_count
from {{ ref('fact_customer_profile_audit') }}
where customer_id in (select customer_id from ({{ customer_changes() }}) as changed_customers)
group by customer_sk, attribute_name
having count(*) > 1
