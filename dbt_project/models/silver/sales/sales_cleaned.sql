-- One row per order: the latest load wins when a corrected file repeats an order id.
-- Bronze keeps each value as it arrived (text); the cleaning is declared here, column by column:
--   every value: trimmed, and null when it is a missing-value word (macro sales_value)
--   product, category: runs of whitespace (tabs, line breaks, NBSP) as one space
--   region, currency: upper-cased; currency defaults to USD, category to Unknown
--   order_date, quantity, unit_price: typed (bronze let only values that cast through)
--   total_amount: quantity * unit_price, rounded to cents
-- Sensitive columns stay Fernet tokens (cleaned before encryption by the rules declared in
-- dw_platform/sales/schema.yaml); dbt never sees the keys.
-- Incremental by blob (the run's partition, DW_PARTITION_KEYS): the orders of the run's blobs, and
-- those whose row came from them, are rebuilt from every blob's rows of them (macros/changed_keys.sql;
-- bronze's index on the trimmed order_id, dw_platform/sales/ingest.py ORDER_KEY).
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook=[
            "{{ serialize('sales_cleaned') }}",
            "{{ replace_changed_keys('order_id', sales_changed_orders(), replaced={'order_date': 'date'}) }}",
        ],
        indexes=[
            {'columns': ['order_id'], 'unique': true},
            {'columns': ['order_date']},
            {'columns': ['source_blob']},
            {'columns': ['_built_at']},
        ],
    )
}}

with

source as (

    select * from {{ source('bronze', 'sales') }}
    {% if is_incremental() %}
    where {{ sales_trim('order_id') }} in (select key from {{ changed_keys() }})
    {% endif %}

),

ranked as (

    select
        *,
        row_number() over (
            partition by {{ sales_value('order_id') }}
            order by _bronze_load_ts desc, _bronze_source_file desc, source_line desc
        ) as load_rank
    from source

),

cleaned as (

    select
        {{ sales_value('order_id') }} as order_id,
        {{ sales_value('order_date') }}::date as order_date,
        customer_email as customer_email_encrypted,
        customer_name as customer_name_encrypted,
        regexp_replace({{ sales_value('product') }}, '[\s\u00a0]+', ' ', 'g') as product,
        coalesce(regexp_replace({{ sales_value('category') }}, '[\s\u00a0]+', ' ', 'g'), 'Unknown') as category,
        upper({{ sales_value('region') }}) as region,
        {{ sales_value('quantity') }}::bigint as quantity,
        {{ sales_value('unit_price') }}::numeric as unit_price,
        coalesce(upper({{ sales_value('currency') }}), 'USD') as currency,
        _bronze_source_file as source_blob,
        source_line,
        _bronze_load_ts as loaded_at,
        _bronze_batch_id as batch_id
    from ranked
    where load_rank = 1

),

derived as (

    select
        *,
        round(quantity * unit_price, 2) as total_amount
    from cleaned

)

select
    order_id, order_date, customer_email_encrypted, customer_name_encrypted, product, category, region,
    quantity, unit_price, currency, total_amount, source_blob, source_line, loaded_at, batch_id,
    clock_timestamp() as _built_at
from derived
