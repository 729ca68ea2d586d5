with

current_customers as (

    select * from {{ ref('dim_customer_profile') }}
    where is_current

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
