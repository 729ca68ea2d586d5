-- One row per current customer per valid contact channel. Incremental: the pre-hook removes the
-- rows of the customers the window changed (macros/customer_window.sql), the model adds theirs again.
-- depends_on: {{ ref('customer_profile_standardized') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook=[
            "{{ serialize('bridge_customer_contact_channel') }}",
            "{% if is_incremental() %}delete from {{ this }} where customer_id in "
            ~ "(select customer_id from ({{ customer_changes() }}) as changed_customers){% endif %}",
        ],
        indexes=[{'columns': ['customer_id']}],
    )
}}

with

current_customers as (

    select * from {{ ref('dim_customer_profile') }}
    where is_current
    {% if is_incremental() %}
      and customer_id in (select customer_id from ({{ customer_changes() }}) as changed_customers)
    {% endif %}

),

final as (

    -- Both channels of a customer from one pass, written next to each other: a later change of
    -- the customer deletes its rows from one heap page, not one per channel.
    select
        current_customers.customer_sk,
        current_customers.customer_id,
        channels.channel,
        channels.contact_value,
        current_customers.marketing_opt_in as is_marketing_allowed
    from current_customers
    cross join lateral (
        values
            ('email', current_customers.email, current_customers.is_valid_email),
            ('phone', current_customers.phone, current_customers.is_valid_phone)
    ) as channels (channel, contact_value, is_valid)
    where channels.is_valid

)

select * from final
