-- Revenue and units rolled up by year > quarter > month, by category and by country, with every
-- subtotal and the grand total. period_level says which time level a row is ('month', 'quarter',
-- 'year', 'all'); category/country 'all' marks a total over them. Rebuilt whole from the monthly
-- base (months x categories x countries: small whatever the history).
with

monthly as (

    select
        base.year_month / 100 as year,
        (base.year_month % 100 + 2) / 3 as quarter,
        base.year_month % 100 as month,
        cat.category,
        cty.country,
        base.orders,
        base.units,
        base.revenue
    from {{ ref('softcart_sales_monthly') }} as base
    inner join {{ ref('softcart_dim_category') }} as cat on base.category_key = cat.category_key
    inner join {{ ref('softcart_dim_country') }} as cty on base.country_key = cty.country_key

)

select
    case
        when grouping(month) = 0 then 'month'
        when grouping(quarter) = 0 then 'quarter'
        when grouping(year) = 0 then 'year'
        else 'all'
    end as period_level,
    year,
    quarter,
    month,
    case when grouping(category) = 1 then 'all' else category end as category,
    case when grouping(country) = 1 then 'all' else country end as country,
    sum(orders) as orders,
    sum(units) as units,
    sum(revenue) as revenue
from monthly
group by rollup (year, quarter, month), rollup (category), rollup (country)
