-- Fails when one level of the summary (e.g. every month x category x country row) does not add
-- up to the grand total, or when a grain appears twice. The whole summary by nature (it is small:
-- periods x categories x countries).
with

summary as (
    select * from {{ ref('softcart_sales_summary') }}
),

grand as (
    select revenue from summary where period_level = 'all' and category = 'all' and country = 'all'
),

levels as (
    select period_level, category = 'all' as all_categories, country = 'all' as all_countries,
           sum(revenue) as revenue
    from summary
    group by 1, 2, 3
),

duplicates as (
    select period_level, year, quarter, month, category, country
    from summary
    group by 1, 2, 3, 4, 5, 6
    having count(*) > 1
)

select l.period_level, l.all_categories, l.all_countries, l.revenue, g.revenue as grand_total
from levels as l cross join grand as g
where l.revenue <> g.revenue
union all
select period_level, null, null, null, null from duplicates
