-- Fails when softcart_fact_sales does not hold exactly the valid silver sales (a join lost or doubled rows).
-- Looks at the sales this dbt invocation built (every sale in a full build).
{{ config(meta={'dagster': {'ref': {'name': 'softcart_fact_sales'}}}) }}
with

silver as (
    select order_id from {{ ref('softcart_sales') }}
    where is_valid and {{ built_this_run() }}
),

fact as (
    select order_id from {{ ref('softcart_fact_sales') }}
    where {{ built_this_run() }}
)

select 'fact' as side, order_id from fact
except all
select 'fact', order_id from silver
union all
(
    select 'silver' as side, order_id from silver
    except all
    select 'silver', order_id from fact
)
