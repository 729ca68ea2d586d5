-- Revenue and units rolled up by year > quarter > month, by category and by country, with every
-- subtotal and the grand total. period_level says which time level a row is ('month', 'quarter',
-- 'year', 'all'); category/country 'all' marks a total over them.
select
    case
        when grouping(d.month) = 0 then 'month'
        when grouping(d.quarter) = 0 then 'quarter'
        when grouping(d.year) = 0 then 'year'
        else 'all'
    end as period_level,
    d.year,
    d.quarter,
    d.month,
    case when grouping(cat.category) = 1 then 'all' else cat.category end as category,
    case when grouping(cty.country) = 1 then 'all' else cty.country end as country,
    count(*) as orders,
    sum(f.quantity) as units,
    sum(f.amount) as revenue
from {{ ref('fact_sales') }} as f
join {{ ref('dim_date') }} as d on d.date_key = f.date_key
join {{ ref('dim_category') }} as cat on cat.category_key = f.category_key
join {{ ref('dim_country') }} as cty on cty.country_key = f.country_key
group by rollup (d.year, d.quarter, d.month), rollup (cat.category), rollup (cty.country)
