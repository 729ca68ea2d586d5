-- Sales per day, region, product and currency (amounts in different currencies never mix).
with

orders as (

    select * from {{ ref('sales_cleaned') }}

),

summary as (

    select
        order_date,
        region,
        category,
        product,
        currency,
        count(*) as order_count,
        sum(quantity) as units_sold,
        sum(total_amount) as revenue,
        round(sum(total_amount) / nullif(sum(quantity), 0), 2) as average_unit_price
    from orders
    group by order_date, region, category, product, currency

)

select * from summary
