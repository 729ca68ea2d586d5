{# Normalized categorical values of the video domain; missing -> 'unknown', unlisted -> 'other'. #}
{% macro video_country(column) -%}
case upper(btrim(coalesce({{ column }}, '')))
    when '' then 'unknown'
    when 'US' then 'US' when 'USA' then 'US'
    when 'DE' then 'DE' when 'GB' then 'GB' when 'UK' then 'GB'
    when 'FR' then 'FR' when 'BR' then 'BR'
    else 'other'
end
{%- endmacro %}

{% macro video_device(column) -%}
case regexp_replace(lower(btrim(coalesce({{ column }}, ''))), '[^a-z]+', '_', 'g')
    when '' then 'unknown'
    when 'mobile' then 'mobile' when 'phone' then 'mobile'
    when 'tv' then 'tv' when 'smart_tv' then 'tv'
    when 'desktop' then 'desktop' when 'web' then 'desktop'
    when 'tablet' then 'tablet'
    else 'other'
end
{%- endmacro %}
