-- One row per order: the latest load wins when a corrected file repeats an order id.
-- Sensitive columns stay Fernet tokens; dbt never sees the keys.
{{ config(materialized='table', indexes=[{'columns': ['order_id'], 'unique': true}, {'columns': ['order_date']}]) }}

with

source as (

    select * from {{ source('bronze', 'sales') }}

),

ranked as (

    select
        *,
        row_number() over (
            partition by order_id
            order by _bronze_load_ts desc, _bronze_source_file desc, source_line desc
        ) as load_rank
    from source

),

cleaned as (

    select
        order_id,
        order_date,
        customer_email as customer_email_encrypted,
        customer_name as customer_name_encrypted,
        product,
        coalesce(category, 'Unknown') as category,
        region,
        quantity,
        unit_price,
        currency,
        total_amount,
        _bronze_source_file as source_blob,
        source_line,
        _bronze_load_ts as loaded_at,
        _bronze_batch_id as batch_id
    from ranked
    where load_rank = 1

)

select * from cleaned
