-- Fails when silver holds more than one row for one customer version (customer_id + last_modified_ts).
-- Looks at the versions the run's window changed (every version in an unpartitioned run): each
-- one's rows by the version key's index.
select
    customer_id,
    last_modified_ts,
    count(*) as row_count
from {{ ref('customer_profile_standardized') }}
where (customer_id, last_modified_ts) in (
    select customer_id, last_modified_ts from {{ ref('customer_profile_standardized') }}
    where {{ customer_changed_versions() }}
)
group by customer_id, last_modified_ts
having count(*) > 1
