-- Fails when a closed version does not end strictly after it starts.
-- Looks at the customers the run's window changed (all of them in an unpartitioned run).
{{ config(meta={'dagster': {'ref': {'name': 'dim_customer_profile'}}}) }}
select
    customer_sk,
    valid_from,
    valid_to
from {{ ref('dim_customer_profile') }}
where valid_to is not null
  and valid_from >= valid_to
  and customer_id in (select customer_id from ({{ customer_changes() }}) as changed_customers)
