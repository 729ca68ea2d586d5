-- The product categories from the reference seed; keys are the seed's (stable across rebuilds).
select category_key, category
from {{ ref('softcart_categories') }}
