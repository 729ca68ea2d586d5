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

email_channels as (

    select
        customer_sk,
        customer_id,
        'email' as channel,
        email as contact_value,
        marketing_opt_in as is_marketing_allowed
    from current_customers
    where is_valid_email

),

phone_channels as (

    select
        customer_sk,
        customer_id,
        'phone' as channel,
        phone as contact_value,
        marketing_opt_in as is_marketing_allowed
    from current_customers
    where is_valid_phone

),

final as (

    select * from email_channels
    union all
    select * from phone_channels

)

select * from final
