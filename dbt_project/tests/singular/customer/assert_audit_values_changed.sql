-- Fails when an audit row records an attribute whose old and new values are the same.
select
    customer_sk,
    attribute_name,
    old_value,
    new_value
from {{ ref('fact_customer_profile_audit') }}
where not (old_value is distinct from new_value)
