-- One row per SoftCart sale (rowid), typed and validated: rows a report must not count are
-- flagged (is_valid = false, with the reason), never dropped. Category and country come from the
-- latest version of the product and customer and the reference seeds; 'unknown' when missing.
-- Incremental: a sync adds the new rowids, and rebuilds the sales of every product or customer
-- whose latest version (or its reference mapping) differs from what silver holds. `_built_at`
-- says when a row was last built: gold takes the rows built after what it holds.
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='order_id',
    on_schema_change='append_new_columns',
    pre_hook="{{ serialize('softcart_sales') }}",
    indexes=[
        {'columns': ['order_id'], 'unique': true},
        {'columns': ['product_id']},
        {'columns': ['customer_id']},
        {'columns': ['sale_date']},
        {'columns': ['_built_at']},
    ]
) }}

with

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

mapped_products as (

    select
        p.product_id,
        p.product_name,
        p.category as source_category,
        coalesce(cat.category, 'unknown') as category
    from products as p
    left join categories as cat on lower(btrim(p.category)) = lower(cat.category) and cat.category_key <> 0

),

mapped_customers as (

    select
        c.customer_id,
        c.country as source_country,
        coalesce(cty.country, 'unknown') as country
    from customers as c
    left join countries as cty
        on (lower(btrim(c.country)) = lower(cty.country) or upper(btrim(c.country)) = cty.iso_code)
        and cty.country_key <> 0

),

{% if is_incremental() %}
-- A product's (or customer's) sales are always built together: one silver row tells what silver holds.
changed_products as (

    select p.product_id
    from mapped_products as p
    cross join lateral (
        select s.product_name, s.source_category, s.category
        from {{ this }} as s
        where s.product_id = p.product_id
        limit 1
    ) as held
    where (held.product_name, held.source_category, held.category)
        is distinct from (p.product_name, p.source_category, p.category)

),

changed_customers as (

    select c.customer_id
    from mapped_customers as c
    cross join lateral (
        select s.source_country, s.country
        from {{ this }} as s
        where s.customer_id = c.customer_id
        limit 1
    ) as held
    where (held.source_country, held.country) is distinct from (c.source_country, c.country)

),

sales as (

    select * from {{ source('bronze', 'softcart_sales_data') }}
    where rowid > (select coalesce(max(order_id), 0) from {{ this }})
    union all
    select * from {{ source('bronze', 'softcart_sales_data') }}
    where rowid <= (select coalesce(max(order_id), 0) from {{ this }})
      and rowid in (
          select order_id from {{ this }} where product_id in (select product_id from changed_products)
          union
          select order_id from {{ this }} where customer_id in (select customer_id from changed_customers)
      )

),
{% else %}
sales as (

    select * from {{ source('bronze', 'softcart_sales_data') }}

),
{% endif %}

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
        p.source_category,
        coalesce(p.category, 'unknown') as category,
        c.source_country,
        coalesce(c.country, 'unknown') as country,
        p.product_id is null as is_unknown_product,
        c.customer_id is null as is_unknown_customer,
        s.quantity is null or s.quantity <= 0 as has_bad_quantity,
        s.price is null or s.price <= 0 as has_bad_price,
        s."timestamp" is null as has_no_timestamp,
        s._bronze_load_ts as loaded_at,
        s._bronze_batch_id as batch_id
    from sales as s
    left join mapped_products as p on s.product_id = p.product_id
    left join mapped_customers as c on s.customer_id = c.customer_id

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
    ), '') as quality_issues,
    clock_timestamp() as _built_at
from joined
