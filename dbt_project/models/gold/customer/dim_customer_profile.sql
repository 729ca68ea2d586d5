-- SCD type 2 over the full silver history; a new version opens only when hash_diff changes.
with

silver_history as (

    select * from {{ ref('customer_profile_standardized') }}

),

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
        row_number() over (
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
