-- Fails when two versions of the same customer have overlapping [valid_from, valid_to) windows.
-- Looks at the customers the run's window changed (all of them in an unpartitioned run).
{{ config(meta={'dagster': {'ref': {'name': 'dim_customer_profile'}}}) }}
select
    earlier.customer_id,
    earlier.customer_sk as earlier_customer_sk,
    later.customer_sk as later_customer_sk
from {{ ref('dim_customer_profile') }} as earlier
inner join {{ ref('dim_customer_profile') }} as later
    on earlier.customer_id = later.customer_id
    and earlier.customer_sk <> later.customer_sk
    and earlier.valid_from <= later.valid_from
    and later.valid_from < coalesce(earlier.valid_to, 'infinity'::timestamp)
where earlier.customer_id in (select customer_id from ({{ customer_changes() }}) as changed_customers)
