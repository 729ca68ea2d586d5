-- One row per SoftCart sale (rowid), typed and validated: rows a report must not count are
-- flagged (is_valid = false, with the reason), never dropped. Category and country come from the
-- latest version of the product and customer and the reference seeds; 'unknown' when missing.
{{ config(materialized='table', indexes=[{'columns': ['order_id'], 'unique': true}]) }}

with

sales as (

    select * from {{ source('bronze', 'softcart_sales_data') }}

),

products as (

    select distinct on (product_id) product_id, product_name, category
    from {{ source('bronze', 'softcart_products') }}
    order by product_id, _bronze_load_ts desc

),

customers as (

    select distinct on (customer_id) customer_id, country
    from {{ source('bronze', 'softcart_customers') }}
    order by customer_id, _bronze_load_ts desc

),

categories as (

    select * from {{ ref('softcart_categories') }}

),

countries as (

    select * from {{ ref('softcart_countries') }}

),

joined as (

    select
        s.rowid as order_id,
        s.product_id,
        s.customer_id,
        s.quantity,
        s.price,
        s.quantity * s.price as amount,
        s."timestamp" as sold_at,
        s."timestamp"::date as sale_date,
        p.product_name,
        p.category as source_category,
        coalesce(cat.category, 'unknown') as category,
        c.country as source_country,
        coalesce(cty.country, 'unknown') as country,
        p.product_id is null as is_unknown_product,
        c.customer_id is null as is_unknown_customer,
        s.quantity is null or s.quantity <= 0 as has_bad_quantity,
        s.price is null or s.price <= 0 as has_bad_price,
        s."timestamp" is null as has_no_timestamp,
        s._bronze_load_ts as loaded_at,
        s._bronze_batch_id as batch_id
    from sales as s
    left join products as p on p.product_id = s.product_id
    left join categories as cat on lower(btrim(p.category)) = lower(cat.category) and cat.category_key <> 0
    left join customers as c on c.customer_id = s.customer_id
    left join countries as cty
        on (lower(btrim(c.country)) = lower(cty.country) or upper(btrim(c.country)) = cty.iso_code)
        and cty.country_key <> 0

)

select
    *,
    not (has_bad_quantity or has_bad_price or has_no_timestamp) as is_valid,  -- noqa: LT01, LT06
    nullif(concat_ws(', ',
        case when has_bad_quantity then 'quantity missing or not positive' end,
        case when has_bad_price then 'price missing or not positive' end,
        case when has_no_timestamp then 'no timestamp' end,
        case when is_unknown_product then 'unknown product' end,
        case when not is_unknown_product and category = 'unknown' then 'category not in the reference list' end,
        case when is_unknown_customer then 'unknown customer' end,
        case when not is_unknown_customer and country = 'unknown' then 'country not in the reference list' end
    ), '') as quality_issues
from joined
