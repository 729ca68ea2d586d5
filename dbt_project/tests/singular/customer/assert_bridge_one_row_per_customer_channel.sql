-- Fails when a customer version has more than one row for the same contact channel.
select
    customer_sk,
    channel,
    count(*) as row_count
from {{ ref('bridge_customer_contact_channel') }}
group by customer_sk, channel
having count(*) > 1
