{# Normalized categorical values of the video domain, from the seeds in seeds/silver/video/:
   missing -> 'unknown', not listed -> 'other'. #}
{% macro video_country(column) -%}
{{ video_seed_value(column, 'video_country_aliases', 'country_alias', 'country_code',
                    'upper(btrim(' ~ column ~ '))') }}
{%- endmacro %}

{% macro video_device(column) -%}
{{ video_seed_value(column, 'video_device_aliases', 'device_alias', 'device',
                    "regexp_replace(lower(btrim(" ~ column ~ ")), '[^a-z]+', '_', 'g')") }}
{%- endmacro %}

{# The seed's `value_column` where its `key_column` equals the SQL expression `key`. The seed's
   columns are renamed (seed_key, seed_value) so that the model's column cannot resolve to a seed
   column of the same name. #}
{% macro video_seed_value(column, seed, key_column, value_column, key) -%}
case
    when btrim(coalesce({{ column }}, '')) = '' then 'unknown'
    else coalesce(
        (select seed.seed_value
         from (select {{ key_column }} as seed_key, {{ value_column }} as seed_value
               from {{ ref(seed) }}) as seed
         where seed.seed_key = {{ key }}),
        'other')
end
{%- endmacro %}
