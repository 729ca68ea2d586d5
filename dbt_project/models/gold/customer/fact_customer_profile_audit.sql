-- One row per attribute that changed between consecutive versions of a customer.
-- Incremental: for each customer the window changed, the pre-hook removes its rows from the first
-- version the dimension may have rebuilt (macros/customer_window.sql), the model adds them again.
-- depends_on: {{ ref('customer_profile_standardized') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook=[
            "{{ serialize('fact_customer_profile_audit') }}",
            "{% if is_incremental() %}delete from {{ this }} as audit using ({{ customer_audit_changes() }}) as changed "
            ~ "where audit.customer_id = changed.customer_id and audit.changed_at >= changed.rebuilt_from{% endif %}",
        ],
        indexes=[{'columns': ['customer_id', 'changed_at']}],
    )
}}

with

{% if is_incremental() %}
changed as (

    {{ customer_audit_changes() }}

),

versions as (

    -- Only the changed customers' versions (an index lookup each): a new version's previous one
    -- is the same customer's. Reading the whole dimension here made a day's cost grow with history.
    select * from {{ ref('dim_customer_profile') }}
    where customer_id in (select customer_id from changed)

),

changed_versions as (

    select versions.*
    from versions
    inner join changed
        on versions.customer_id = changed.customer_id
        and versions.valid_from >= changed.rebuilt_from

),
{% else %}
versions as (

    select * from {{ ref('dim_customer_profile') }}

),
{% endif %}

version_pairs as (

    select
        new_version.customer_id,
        new_version.customer_sk,
        new_version.valid_from as changed_at,
        new_version._bronze_batch_id,
        old_version.first_name as old_first_name,
        new_version.first_name as new_first_name,
        old_version.last_name as old_last_name,
        new_version.last_name as new_last_name,
        old_version.email as old_email,
        new_version.email as new_email,
        old_version.phone as old_phone,
        new_version.phone as new_phone,
        old_version.country_code as old_country_code,
        new_version.country_code as new_country_code,
        old_version.city as old_city,
        new_version.city as new_city,
        old_version.date_of_birth::text as old_date_of_birth,
        new_version.date_of_birth::text as new_date_of_birth,
        old_version.customer_segment as old_customer_segment,
        new_version.customer_segment as new_customer_segment,
        old_version.loyalty_tier as old_loyalty_tier,
        new_version.loyalty_tier as new_loyalty_tier,
        old_version.marketing_opt_in::text as old_marketing_opt_in,
        new_version.marketing_opt_in::text as new_marketing_opt_in
    from {{ 'changed_versions' if is_incremental() else 'versions' }} as new_version
    inner join versions as old_version
        on new_version.customer_id = old_version.customer_id
        and new_version.version_number = old_version.version_number + 1

),

attribute_changes as (

    select
        version_pairs.customer_id,
        version_pairs.customer_sk,
        changes.attribute_name,
        changes.old_value,
        changes.new_value,
        version_pairs.changed_at,
        version_pairs._bronze_batch_id
    from version_pairs
    cross join lateral (
        values
            ('first_name', old_first_name, new_first_name),
            ('last_name', old_last_name, new_last_name),
            ('email', old_email, new_email),
            ('phone', old_phone, new_phone),
            ('country_code', old_country_code, new_country_code),
            ('city', old_city, new_city),
            ('date_of_birth', old_date_of_birth, new_date_of_birth),
            ('customer_segment', old_customer_segment, new_customer_segment),
            ('loyalty_tier', old_loyalty_tier, new_loyalty_tier),
            ('marketing_opt_in', old_marketing_opt_in, new_marketing_opt_in)
    ) as changes (attribute_name, old_value, new_value)
    where changes.old_value is distinct from changes.new_value

)

select * from attribute_changes
