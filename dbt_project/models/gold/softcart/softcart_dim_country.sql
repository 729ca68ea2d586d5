-- The countries from the reference seed; keys are the seed's (stable across rebuilds).
select country_key, country, iso_code, region
from {{ ref('softcart_countries') }}
