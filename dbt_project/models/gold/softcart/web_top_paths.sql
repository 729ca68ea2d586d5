-- The 20 most requested paths (query string removed) per UTC day, bots excluded.
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
    group by request_date, path_without_query

),

ranked as (

    select *, row_number() over (partition by request_date order by requests desc, path) as rank
    from per_path

)

select * from ranked where rank <= 20
