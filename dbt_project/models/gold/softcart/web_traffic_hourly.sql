-- Requests, unique visitors (distinct clients of non-bot requests), bytes and error rate per UTC
-- day and hour.
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook=["{{ serialize('web_traffic_hourly') }}", "{% if is_incremental() %}{{ replace_web_days() }}{% endif %}"],
        indexes=[{'columns': ['request_date']}],
    )
}}
select
    request_date,
    request_hour,
    count(*) as requests,
    count(*) filter (where is_bot) as bot_requests,
    count(distinct client) filter (where not is_bot) as unique_visitors,
    sum(bytes_sent) as bytes_sent,
    count(*) filter (where is_error) as error_requests,
    round(count(*) filter (where is_error)::numeric / count(*), 4) as error_rate
from {{ ref('web_requests') }}
{% if is_incremental() %}
where request_date in ({{ web_changed_days() }})
{% endif %}
group by request_date, request_hour
