{# Normalized categorical values of the video domain, from the seeds in seeds/silver/video/:
   missing -> 'unknown', not listed -> 'other'. The seed's columns are renamed (seed_key,
   seed_value) so that the model's column cannot resolve to a seed column of the same name. #}
{% macro video_country(column) -%}
case
    when btrim(coalesce({{ column }}, '')) = '' then 'unknown'
    else coalesce(
        (select seed.seed_value
         from (select country_alias as seed_key, country_code as seed_value
               from {{ ref('video_country_aliases') }}) as seed
         where seed.seed_key = upper(btrim({{ column }}))),
        'other')
end
{%- endmacro %}

{% macro video_device(column) -%}
case
    when btrim(coalesce({{ column }}, '')) = '' then 'unknown'
    else coalesce(
        (select seed.seed_value
         from (select device_alias as seed_key, device as seed_value
               from {{ ref('video_device_aliases') }}) as seed
         where seed.seed_key = regexp_replace(lower(btrim({{ column }})), '[^a-z]+', '_', 'g')),
        'other')
end
{%- endmacro %}
