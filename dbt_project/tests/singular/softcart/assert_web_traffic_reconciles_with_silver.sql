-- Fails when the hourly and daily traffic tables do not add up to silver's requests and bytes,
-- or an error rate lies outside 0..1.
{{ config(meta={'dagster': {'ref': {'name': 'web_traffic_daily'}}}) }}
with

silver as (
    select count(*) as requests, coalesce(sum(bytes_sent), 0) as bytes from {{ ref('web_requests') }}
),

hourly as (
    select coalesce(sum(requests), 0) as requests, coalesce(sum(bytes_sent), 0) as bytes
    from {{ ref('web_traffic_hourly') }}
),

daily as (
    select coalesce(sum(requests), 0) as requests, coalesce(sum(bytes_sent), 0) as bytes
    from {{ ref('web_traffic_daily') }}
)

select 'totals' as problem from silver, hourly, daily
where silver.requests <> hourly.requests or silver.requests <> daily.requests
   or silver.bytes <> hourly.bytes or silver.bytes <> daily.bytes
union all
select 'error rate out of range' from {{ ref('web_traffic_hourly') }} where error_rate < 0 or error_rate > 1
