{#
  The days of web traffic a run changed: those of the requests silver now holds for the run's log
  files. The gold traffic tables rebuild exactly these days (pre-hook `replace_web_days`), and
  drop a day no request is left for. A file re-loaded with other content: a day it no longer
  covers but other files still do keeps its counts until that day changes again or a full refresh.
#}
{% macro web_changed_days(silver=none) -%}
    select distinct request_date
    from {{ silver or ref('web_requests') }}
    where source_file in (select source from ({{ run_partition_loads('bronze/web_access_log') }}) as loads)
{%- endmacro %}

{% macro replace_web_days() -%}
    delete from {{ this }} as gold
    where gold.request_date in ({{ web_changed_days() }})
       or not exists (select from {{ ref('web_requests') }} as silver where silver.request_date = gold.request_date)
{%- endmacro %}
