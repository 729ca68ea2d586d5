{#
  What the run's window changes in the customer domain. A bronze load of the window also re-reads
  a lookback before it and adds the versions committed late on the source (modified before the
  window, first read now): those count as changed too. The ledger says which loads those were
  and from where they read. Everything here is an index range scan on last_modified_ts: the cost
  is the window's, whatever the history.
#}

{#
  The bronze loads of partitions inside the window that read from before it. The ledger is the
  bronze loader's table (dw_platform/lib/bronze.py), not a dbt source: it has no asset of its own,
  and the customer models depend on the customer bronze asset already.
#}
{% macro customer_late_loads() -%}
    select batch_id, read_start at time zone 'UTC' as read_start
    from bronze.batch_ledger
    where target_table = 'bronze.customer_profile_raw'
      and status = 'succeeded'
      and window_start >= {{ window_start() }} at time zone 'UTC'
      and window_start < {{ window_end() }} at time zone 'UTC'
      and read_start < {{ window_start() }} at time zone 'UTC'
{%- endmacro %}

{# Modified before the window, no earlier than the window's late loads read from. #}
{% macro customer_late_range(alias=none) -%}
    {%- set column = (alias ~ '.' if alias else '') ~ 'last_modified_ts' -%}
    {{ column }} >= (select min(read_start) from ({{ customer_late_loads() }}) as late_loads)
    and {{ column }} < {{ window_start() }}
{%- endmacro %}

{#
  The customers the window changed in silver, each with its earliest changed version: versions
  modified in the window, and those the late loads added (silver keeps the bronze batch of a version).
#}
{% macro customer_changes(silver=none) -%}
    {%- set silver = silver or ref('customer_profile_standardized') -%}
    select customer_id, min(last_modified_ts) as changed_from
    from (
        select customer_id, last_modified_ts from {{ silver }}
        where last_modified_ts >= {{ window_start() }}
          and last_modified_ts < {{ window_end() }}
        union all
        select customer_id, last_modified_ts from {{ silver }}
        where {{ customer_late_range() }}
          and _bronze_batch_id in (select batch_id from ({{ customer_late_loads() }}) as late_loads)
    ) as changed_versions
    group by customer_id
{%- endmacro %}

{#
  The silver versions the window changed, as a condition on silver's rows (the same versions
  customer_changes lists): two index ranges on last_modified_ts, so a test of silver reads the
  rows the run built, never the changed customers' older versions scattered over the history.
#}
{% macro customer_changed_versions() -%}
    (last_modified_ts >= {{ window_start() }} and last_modified_ts < {{ window_end() }}
     or {{ customer_late_range() }}
        and _bronze_batch_id in (select batch_id from ({{ customer_late_loads() }}) as late_loads))
{%- endmacro %}

{#
  dim_customer_profile's pre-hook: each changed customer's versions still in effect at or after
  its earliest change, the one that ended exactly there included (a changed version may merge
  into it). What stays is closed before the change and needs no rebuild.
#}
{% macro delete_changed_customer_versions() -%}
    delete from {{ this }} as dim
    using ({{ customer_changes() }}) as changed_customers
    where dim.customer_id = changed_customers.customer_id
      and coalesce(dim.valid_to, 'infinity'::timestamp) >= changed_customers.changed_from
{%- endmacro %}

{#
  For fact_customer_profile_audit, after the dimension was rebuilt: each changed customer and the
  start of the first version the dimension may have rebuilt (the last one starting before the
  change; -infinity when there is none). Audit rows from there on are derived again.
#}
{% macro customer_audit_changes() -%}
    select
        changed_customers.customer_id,
        coalesce(max(dim.valid_from), '-infinity'::timestamp) as rebuilt_from
    from ({{ customer_changes() }}) as changed_customers
    left join {{ ref('dim_customer_profile') }} as dim
        on changed_customers.customer_id = dim.customer_id
        and dim.valid_from < changed_customers.changed_from
    group by changed_customers.customer_id
{%- endmacro %}
