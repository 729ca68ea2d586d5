-- Fails when a version has more than one audit row for the same attribute.
select
    customer_sk,
    attribute_name,
    count(*) as row_count
from {{ ref('fact_customer_profile_audit') }}
group by customer_sk, attribute_name
having count(*) > 1
