-- Fails when a closed version does not end strictly after it starts.
select
    customer_sk,
    valid_from,
    valid_to
from {{ ref('dim_customer_profile') }}
where valid_to is not null
  and valid_from >= valid_to
