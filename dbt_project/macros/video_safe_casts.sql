{#
  Casts that return null instead of failing on a value that does not parse, for the video
  domain's bronze text columns. Created by the pre-hook of the video silver models, under an
  advisory lock: two models (or two runs) replacing a function at once would collide.
  Timestamps without a zone are read as UTC.
#}
{% macro create_video_safe_casts() %}
do $do$
begin
    perform pg_advisory_xact_lock(hashtextextended('dw_platform.video_safe_casts', 0));
    create or replace function public.dw_try_timestamptz(value text) returns timestamptz
    language plpgsql immutable set timezone = 'UTC' as $fn$
    begin
        if value is null or btrim(value) = '' then return null; end if;
        return replace(btrim(value), '/', '-')::timestamptz;
    exception when others then
        return null;
    end $fn$;
    create or replace function public.dw_try_numeric(value text) returns numeric
    language plpgsql immutable as $fn$
    begin
        if value is null or btrim(value) = '' then return null; end if;
        return btrim(value)::numeric;
    exception when others then
        return null;
    end $fn$;
end
$do$
{% endmacro %}
