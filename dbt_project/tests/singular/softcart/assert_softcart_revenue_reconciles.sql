-- Fails when revenue or units of a month differ between silver (valid sales), the fact table and
-- the monthly base, or when the summary's grand total is not the base's.
-- Looks at the months of the sales this dbt invocation built (every month in a full build).
{{ config(meta={'dagster': {'ref': {'name': 'softcart_sales_summary'}}}) }}
with

months as (
    select distinct date_key / 100 as year_month from {{ ref('softcart_fact_sales') }}
    where {{ built_this_run() }}
),

silver as (
    select months.year_month, sum(s.amount) as revenue, sum(s.quantity) as units
    from months
    inner join {{ ref('softcart_sales') }} as s
        on s.sale_date >= make_date(months.year_month / 100, months.year_month % 100, 1)
        and s.sale_date < make_date(months.year_month / 100, months.year_month % 100, 1) + interval '1 month'
    where s.is_valid
    group by months.year_month
),

fact as (
    select months.year_month, sum(f.amount) as revenue, sum(f.quantity) as units
    from months
    inner join {{ ref('softcart_fact_sales') }} as f
        on f.date_key >= months.year_month * 100 and f.date_key < months.year_month * 100 + 100
    group by months.year_month
),

base as (
    select year_month, sum(revenue) as revenue, sum(units) as units
    from {{ ref('softcart_sales_monthly') }}
    where year_month in (select year_month from months)
    group by year_month
),

totals as (
    select
        (select coalesce(sum(revenue), 0) from {{ ref('softcart_sales_monthly') }}) as base_revenue,
        (select coalesce(sum(revenue), 0) from {{ ref('softcart_sales_summary') }}
         where period_level = 'all' and category = 'all' and country = 'all') as summary_revenue
)

select months.year_month, silver.revenue as silver_revenue, fact.revenue as fact_revenue, base.revenue as base_revenue
from months
left join silver on months.year_month = silver.year_month
left join fact on months.year_month = fact.year_month
left join base on months.year_month = base.year_month
where silver.revenue is distinct from fact.revenue or fact.revenue is distinct from base.revenue
   or silver.units is distinct from fact.units or fact.units is distinct from base.units
union all
select null, null, base_revenue, summary_revenue from totals where base_revenue <> summary_revenue
