-- One row per customer version (customer_id + last_modified_ts), every version bronze holds.
-- Daily-partitioned: a run rebuilds the versions its window changed in bronze (macros/customer_window.sql:
-- modified inside [DW_MIN_DATE, DW_MAX_DATE), or added before it by the window's late loads) from
-- every bronze row of those versions; delete+insert on the version key keeps one row per version.
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['customer_id', 'last_modified_ts'],
        on_schema_change='append_new_columns',
        tags=['customer_daily'],
        meta={'partition_column': 'last_modified_ts'},
        pre_hook="{{ serialize('customer_profile_standardized') }}",
        indexes=[
            {'columns': ['last_modified_ts']},
            {'columns': ['customer_id', 'last_modified_ts']},
        ],
    )
}}

with

{% if is_incremental() %}
late_versions as (

    -- Versions the window's bronze loads added from their lookback before it.
    select distinct customer_id, last_modified_ts
    from {{ source('bronze', 'customer_profile_raw') }}
    where {{ customer_late_range() }}
      and _bronze_batch_id in (select batch_id from ({{ customer_late_loads() }}) as late_loads)

),
{% endif %}

source as (

    -- Every bronze row of a changed version (the latest load of a version wins below).
    select * from {{ source('bronze', 'customer_profile_raw') }}
    where last_modified_ts >= {{ window_start() }}
      and last_modified_ts < {{ window_end() }}
      and customer_id is not null
    {% if is_incremental() %}
    union all
    select bronze.*
    from {{ source('bronze', 'customer_profile_raw') }} as bronze
    inner join late_versions
        on bronze.customer_id = late_versions.customer_id
        and bronze.last_modified_ts = late_versions.last_modified_ts
    where {{ customer_late_range('bronze') }}
    {% endif %}

),

latest_per_version as (

    -- Two bronze rows share a version key only when the source changed a row without moving
    -- last_modified_ts: the one loaded last wins.
    select
        *,
        row_number() over (
            partition by customer_id, last_modified_ts
            order by _bronze_load_ts desc, _bronze_batch_id::text desc
        ) as version_rank
    from source

),

deduplicated as (

    select * from latest_per_version
    where version_rank = 1

),

country_aliases as (

    select * from {{ ref('customer_country_aliases') }}

),

-- International dialling prefixes for national numbers written with a trunk '0'.
country_dial_codes as (

    select * from {{ ref('customer_country_dial_codes') }}

),

cleansed as (

    select
        deduplicated.customer_id,
        nullif(initcap(regexp_replace(trim(deduplicated.first_name), '\s+', ' ', 'g')), '') as first_name,
        nullif(initcap(regexp_replace(trim(deduplicated.last_name), '\s+', ' ', 'g')), '') as last_name,
        nullif(lower(trim(deduplicated.email)), '') as email,
        deduplicated.phone as phone_raw,
        regexp_replace(coalesce(deduplicated.phone, ''), '[^0-9]', '', 'g') as phone_digits,
        left(trim(deduplicated.phone), 1) = '+' as phone_has_plus,
        country_aliases.country_code,
        country_aliases.country_name,
        nullif(initcap(regexp_replace(trim(deduplicated.city), '\s+', ' ', 'g')), '') as city,
        deduplicated.date_of_birth,
        case regexp_replace(lower(trim(deduplicated.customer_segment)), '[\s-]+', '_', 'g')
            when 'retail' then 'retail'
            when 'small_business' then 'small_business'
            when 'smb' then 'small_business'
            when 'enterprise' then 'enterprise'
            else 'unknown'
        end as customer_segment,
        coalesce(nullif(lower(trim(deduplicated.loyalty_tier)), ''), 'none') as loyalty_tier,
        coalesce(deduplicated.marketing_opt_in, false) as marketing_opt_in,
        deduplicated.created_ts,
        deduplicated.last_modified_ts,
        deduplicated._bronze_batch_id,
        deduplicated._bronze_load_ts,
        deduplicated._bronze_row_hash
    from deduplicated
    left join country_aliases
        on lower(regexp_replace(trim(deduplicated.country), '\s+', ' ', 'g')) = country_aliases.country_alias

),

phone_normalized as (

    select
        cleansed.*,
        -- E.164; national numbers default to +1 for US/CA/unknown country, trunk '0' for known dial codes.
        case
            when phone_has_plus and length(phone_digits) between 8 and 15
                then '+' || phone_digits
            when phone_digits like '00%' and length(phone_digits) between 10 and 17
                then '+' || substr(phone_digits, 3)
            when length(phone_digits) = 10 and coalesce(cleansed.country_code, 'US') in ('US', 'CA')
                then '+1' || phone_digits
            when length(phone_digits) = 11 and phone_digits like '1%'
                and coalesce(cleansed.country_code, 'US') in ('US', 'CA')
                then '+' || phone_digits
            when phone_digits like '0%' and length(phone_digits) between 9 and 12
                and country_dial_codes.dial_code is not null
                then '+' || country_dial_codes.dial_code || substr(phone_digits, 2)
        end as phone
    from cleansed
    left join country_dial_codes
        on cleansed.country_code = country_dial_codes.country_code

),

validated as (

    select
        *,
        coalesce(email ~ '^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$', false) as is_valid_email,
        coalesce(phone ~ '^\+[1-9][0-9]{7,14}$', false) as is_valid_phone,
        country_code is not null as is_valid_country,
        coalesce(date_of_birth between date '1900-01-01' and current_date, false) as is_valid_date_of_birth,
        first_name is not null and last_name is not null as has_full_name
    from phone_normalized

),

final as (

    select
        customer_id,
        first_name,
        last_name,
        nullif(concat_ws(' ', first_name, last_name), '') as full_name,
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
        last_modified_ts,
        is_valid_email,
        is_valid_phone,
        is_valid_country,
        is_valid_date_of_birth,
        has_full_name,
        is_valid_email and is_valid_phone and is_valid_country
            and is_valid_date_of_birth and has_full_name as is_valid,
        md5(concat_ws('||',
            coalesce(first_name, '^^null^^'),
            coalesce(last_name, '^^null^^'),
            coalesce(email, '^^null^^'),
            coalesce(phone, '^^null^^'),
            coalesce(country_code, '^^null^^'),
            coalesce(city, '^^null^^'),
            coalesce(date_of_birth::text, '^^null^^'),
            coalesce(customer_segment, '^^null^^'),
            coalesce(loyalty_tier, '^^null^^'),
            coalesce(marketing_opt_in::text, '^^null^^')
        )) as hash_diff,
        _bronze_batch_id,
        _bronze_load_ts,
        _bronze_row_hash
    from validated

)

select * from final
