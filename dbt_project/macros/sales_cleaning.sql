{#
  The sales domain's declared cleaning of bronze text (bronze keeps each value as it arrived).
  sales_value: null when the value is one of the file's missing-value words (spaces around it
  aside; the list is dw_platform/sales/schema.yaml's `missing`, mirrored in the dbt var
  sales_missing_values and compared by a test), else the value trimmed of whitespace, NBSP included.
#}
{% macro sales_value(column) -%}
    case when {{ sales_trim(column) }} in (
        {%- for word in var('sales_missing_values') %}'{{ word }}'{{ ', ' if not loop.last }}{% endfor -%}
    ) then null else {{ sales_trim(column) }} end
{%- endmacro %}

{# Leading and trailing whitespace removed: spaces, tabs, line breaks, NBSP. #}
{% macro sales_trim(column) -%}
    regexp_replace({{ column }}, '^[\s\u00a0]+|[\s\u00a0]+$', '', 'g')
{%- endmacro %}

{#
  The orders a run of sales_cleaned rebuilds: those of its blobs' rows in bronze, and those whose
  silver row came from its blobs (a re-loaded blob may no longer hold them).
#}
{% macro sales_changed_orders() -%}
    {%- set blobs = '(select source from (' ~ run_partition_loads('bronze/sales') ~ ') as loads)' -%}
    select {{ sales_value('order_id') }} as key from {{ source('bronze', 'sales') }}
    where _bronze_source_file in {{ blobs }}
    union all
    select order_id from {{ this }} where source_blob in {{ blobs }}
{%- endmacro %}
