-- Fails when an audit row records an attribute whose old and new values are the same.
-- Looks at the customers the run's window changed (all of them in an unpartitioned run).
{{ config(meta={'dagster': {'ref': {'name': 'fact_customer_profile_audit'}}}) }}
select
    customer_sk,
    attribute_name,
    old_value,
    new_value
from {{ ref('fact_customer_profile_audit') }}
where not (old_value is distinct from new_value)
  and customer_id in (select customer_id from ({{ customer_changes() }}) as changed_customers)
