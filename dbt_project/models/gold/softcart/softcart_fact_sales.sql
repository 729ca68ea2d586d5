-- One row per valid sale (silver.softcart_sales where is_valid), keyed to the dimensions.
-- Incremental: the silver rows built after the newest this table holds (`_built_at`), merged on
-- order_id (a sale's validity never changes; its category or country may).
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='order_id',
    on_schema_change='append_new_columns',
    pre_hook="{{ serialize('softcart_fact_sales') }}",
    indexes=[{'columns': ['order_id'], 'unique': true}, {'columns': ['date_key']}, {'columns': ['_built_at']}]
) }}

select
    s.order_id,
    to_char(s.sale_date, 'YYYYMMDD')::integer as date_key,
    cat.category_key,
    cty.country_key,
    s.product_id,
    s.customer_id,
    s.quantity,
    s.price,
    s.amount,
    s.sold_at,
    s._built_at
from {{ ref('softcart_sales') }} as s
inner join {{ ref('softcart_dim_category') }} as cat on s.category = cat.category
inner join {{ ref('softcart_dim_country') }} as cty on s.country = cty.country
where s.is_valid
{% if is_incremental() %}
  and s._built_at > (select coalesce(max(_built_at), '-infinity') from {{ this }})
{% endif %}
