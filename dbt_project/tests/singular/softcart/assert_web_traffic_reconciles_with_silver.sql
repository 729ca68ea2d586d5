-- Fails when, on a day the run changed, the hourly and daily traffic tables do not add up to
-- silver's requests and bytes, or an error rate lies outside 0..1.
-- Looks at the days of traffic the run's log files changed (every day in an unpartitioned run).
{{ config(meta={'dagster': {'ref': {'name': 'web_traffic_daily'}}}) }}
with

days as (
    {{ web_changed_days() }}
),

silver as (
    select count(*) as requests, coalesce(sum(bytes_sent), 0) as bytes from {{ ref('web_requests') }}
    where request_date in (select request_date from days)
),

hourly as (
    select coalesce(sum(requests), 0) as requests, coalesce(sum(bytes_sent), 0) as bytes
    from {{ ref('web_traffic_hourly') }}
    where request_date in (select request_date from days)
),

daily as (
    select coalesce(sum(requests), 0) as requests, coalesce(sum(bytes_sent), 0) as bytes
    from {{ ref('web_traffic_daily') }}
    where request_date in (select request_date from days)
)

select 'totals' as problem from silver, hourly, daily
where silver.requests <> hourly.requests or silver.requests <> daily.requests
   or silver.bytes <> hourly.bytes or silver.bytes <> daily.bytes
union all
select 'error rate out of range' from {{ ref('web_traffic_hourly') }}
where (error_rate < 0 or error_rate > 1) and request_date in (select request_date from days)
