-- SCD type 2 over the silver history; a new version opens only when hash_diff changes.
-- Incremental: the pre-hook removes, for each customer the window changed (macros/customer_window.sql),
-- its versions from the one in effect before its earliest change on; the model rebuilds them from
-- silver, continuing the customer's kept history (its last kept version's end and number). Other
-- customers are not read. A full refresh (or the first build) builds every customer's history.
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook=[
            "{{ serialize('dim_customer_profile') }}",
            "{% if is_incremental() %}{{ delete_changed_customer_versions() }}{% endif %}",
        ],
        indexes=[
            {'columns': ['customer_sk'], 'unique': True},
            {'columns': ['customer_id', 'valid_from']},
        ],
    )
}}

with

{% if is_incremental() %}
changed_customers as (

    {{ customer_changes() }}

),

kept_history as (

    -- Where each changed customer's kept history ends (after the pre-hook; none when all went).
    select
        changed_customers.customer_id,
        max(dim.valid_to) as rebuild_from,
        coalesce(max(dim.version_number), 0) as kept_versions
    from changed_customers
    left join {{ this }} as dim on changed_customers.customer_id = dim.customer_id
    group by changed_customers.customer_id

),

silver_history as (

    select
        silver.*,
        kept_history.kept_versions
    from {{ ref('customer_profile_standardized') }} as silver
    inner join kept_history
        on silver.customer_id = kept_history.customer_id
        and silver.last_modified_ts >= coalesce(kept_history.rebuild_from, '-infinity'::timestamp)

),
{% else %}
silver_history as (

    select
        *,
        0 as kept_versions
    from {{ ref('customer_profile_standardized') }}

),
{% endif %}

change_markers as (

    select
        *,
        lag(hash_diff) over (
            partition by customer_id
            order by last_modified_ts
        ) as previous_hash_diff
    from silver_history

),

versions as (

    select * from change_markers
    where previous_hash_diff is null
       or previous_hash_diff <> hash_diff

),

versions_with_validity as (

    select
        *,
        last_modified_ts as valid_from,
        lead(last_modified_ts) over (
            partition by customer_id
            order by last_modified_ts
        ) as valid_to,
        kept_versions + row_number() over (
            partition by customer_id
            order by last_modified_ts
        ) as version_number
    from versions

),

final as (

    select
        md5(customer_id::text || '|' || valid_from::text) as customer_sk,
        customer_id,
        first_name,
        last_name,
        full_name,
        email,
        phone,
        country_code,
        country_name,
        city,
        date_of_birth,
        customer_segment,
        loyalty_tier,
        marketing_opt_in,
        created_ts,
        is_valid_email,
        is_valid_phone,
        is_valid_country,
        is_valid_date_of_birth,
        has_full_name,
        is_valid,
        hash_diff,
        valid_from,
        valid_to,
        valid_to is null as is_current,
        version_number,
        _bronze_batch_id
    from versions_with_validity

)

select * from final
