-- Fails when a customer version has more than one row for the same contact channel.
-- Looks at the customers the run's window changed (all of them in an unpartitioned run).
{{ config(meta={'dagster': {'ref': {'name': 'bridge_customer_contact_channel'}}}) }}
select
    customer_sk,
    channel,
    count(*) as row_count
from {{ ref('bridge_customer_contact_channel') }}
where customer_id in (select customer_id from ({{ customer_changes() }}) as changed_customers)
group by customer_sk, channel
having count(*) > 1
