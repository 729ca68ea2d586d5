-- Fails when silver holds more than one row for a customer on the same day of last_modified_ts.
select
    customer_id,
    last_modified_ts::date as modified_date,
    count(*) as row_count
from {{ ref('customer_profile_standardized') }}
group by customer_id, last_modified_ts::date
having count(*) > 1
