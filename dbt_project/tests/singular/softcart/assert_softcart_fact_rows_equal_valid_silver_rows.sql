-- Fails when fact_sales does not hold exactly the valid silver sales (a join lost or doubled rows).
{{ config(meta={'dagster': {'ref': {'name': 'fact_sales'}}}) }}
select 'fact' as side, order_id from {{ ref('fact_sales') }}
except all
select 'fact', order_id from {{ ref('softcart_sales') }} where is_valid
union all
(
    select 'silver' as side, order_id from {{ ref('softcart_sales') }} where is_valid
    except all
    select 'silver', order_id from {{ ref('fact_sales') }}
)
