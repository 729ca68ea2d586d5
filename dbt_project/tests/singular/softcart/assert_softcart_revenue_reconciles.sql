-- Fails when revenue or units differ between silver (valid sales), the fact table and the
-- summary's grand total.
{{ config(meta={'dagster': {'ref': {'name': 'softcart_sales_summary'}}}) }}
with

silver as (
    select coalesce(sum(amount), 0) as revenue, coalesce(sum(quantity), 0) as units
    from {{ ref('softcart_sales') }} where is_valid
),

fact as (
    select coalesce(sum(amount), 0) as revenue, coalesce(sum(quantity), 0) as units from {{ ref('fact_sales') }}
),

summary as (
    select coalesce(sum(revenue), 0) as revenue, coalesce(sum(units), 0) as units
    from {{ ref('softcart_sales_summary') }}
    where period_level = 'all' and category = 'all' and country = 'all'
)

select silver.revenue as silver_revenue, fact.revenue as fact_revenue, summary.revenue as summary_revenue,
       silver.units as silver_units, fact.units as fact_units, summary.units as summary_units
from silver, fact, summary
where silver.revenue <> fact.revenue or fact.revenue <> summary.revenue
   or silver.units <> fact.units or fact.units <> summary.units
