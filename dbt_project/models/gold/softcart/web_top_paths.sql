-- The 20 most requested paths (query string removed) per UTC day, bots excluded.
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook=["{{ serialize('web_top_paths') }}", "{% if is_incremental() %}{{ replace_web_days() }}{% endif %}"],
        indexes=[{'columns': ['request_date']}],
    )
}}
with

per_path as (

    select
        request_date,
        path_without_query as path,
        count(*) as requests,
        count(distinct client) as unique_visitors,
        round(count(*) filter (where is_error)::numeric / count(*), 4) as error_rate
    from {{ ref('web_requests') }}
    where not is_bot and path_without_query is not null
    {% if is_incremental() %}
      and request_date in ({{ web_changed_days() }})
    {% endif %}
    group by request_date, path_without_query

),

ranked as (

    select *, row_number() over (partition by request_date order by requests desc, path) as rank
    from per_path

)

select * from ranked where rank <= 20
