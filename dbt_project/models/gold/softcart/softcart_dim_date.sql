-- One row per calendar day of every year that has a valid sale; date_key = yyyymmdd, so the key
-- of a day never changes between rebuilds. The years come from the monthly base (small).
with

bounds as (

    select
        make_date(min(year_month) / 100, 1, 1) as first_day,
        make_date(max(year_month) / 100, 12, 31) as last_day
    from {{ ref('softcart_sales_monthly') }}

),

days as (

    select generate_series(first_day, last_day, interval '1 day')::date as date_day
    from bounds
    where first_day is not null

)

select
    to_char(date_day, 'YYYYMMDD')::integer as date_key,
    date_day as date,
    extract(year from date_day)::integer as year,
    extract(quarter from date_day)::integer as quarter,
    'Q' || extract(quarter from date_day)::integer as quarter_name,
    extract(month from date_day)::integer as month,
    to_char(date_day, 'FMMonth') as month_name,
    extract(day from date_day)::integer as day,
    extract(isodow from date_day)::integer as weekday,
    to_char(date_day, 'FMDay') as weekday_name
from days
