-- One row per valid sale (silver.softcart_sales where is_valid), keyed to the dimensions.
{{ config(indexes=[{'columns': ['order_id'], 'unique': true}, {'columns': ['date_key']}]) }}

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
    s.sold_at
from {{ ref('softcart_sales') }} as s
join {{ ref('dim_category') }} as cat on cat.category = s.category
join {{ ref('dim_country') }} as cty on cty.country = s.country
where s.is_valid
