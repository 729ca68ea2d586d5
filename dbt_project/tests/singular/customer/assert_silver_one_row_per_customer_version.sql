-- Fails when silver holds more than one row for one customer version (customer_id + last_modified_ts).
-- Looks at the customers the run's window changed (all of them in an unpartitioned run).
select
    customer_id,
    last_modified_ts,
    count(*) as row_count
from {{ ref('customer_profile_standardized') }}
where customer_id in (select customer_id from ({{ customer_changes() }}) as changed_customers)
group by customer_id, last_modified_ts
having count(*) > 1
