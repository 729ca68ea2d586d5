-- Fails when silver holds more than one row for one customer version (customer_id + last_modified_ts).
select
    customer_id,
    last_modified_ts,
    count(*) as row_count
from {{ ref('customer_profile_standardized') }}
group by customer_id, last_modified_ts
having count(*) > 1
