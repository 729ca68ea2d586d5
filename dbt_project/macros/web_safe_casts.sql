{#
  public.dw_try_inet(text): the address as inet, or null when the client field is not an IP
  address (a host name written with HostnameLookups on, garbage). Created by the pre-hook of
  silver.web_requests under an advisory lock (two runs replacing a function at once collide).
#}
{% macro create_web_safe_casts() %}
do $do$
begin
    perform pg_advisory_xact_lock(hashtextextended('dw_platform.web_safe_casts', 0));
    create or replace function public.dw_try_inet(value text) returns inet
    language plpgsql immutable as $fn$
    begin
        if value is null or value !~ '^[0-9A-Fa-f:.]+$' then return null; end if;
        return value::inet;
    exception when others then
        return null;
    end $fn$;
end
$do$
{% endmacro %}
