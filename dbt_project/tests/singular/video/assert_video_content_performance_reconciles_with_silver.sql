-- Fails when total views differ from silver's sessions, or when there is not one row per content item.
-- Depends on more than one model: attached to video_content_performance as a Dagster asset check.
{{ config(meta={'dagster': {'ref': {'name': 'video_content_performance'}}}) }}
select 'views' as what, (select sum(views) from {{ ref('video_content_performance') }}) as gold,
       (select count(*) from {{ ref('video_viewing_sessions') }}
        where content_id in (select content_id from {{ ref('video_content') }})) as silver
where (select sum(views) from {{ ref('video_content_performance') }}) is distinct from
      (select count(*) from {{ ref('video_viewing_sessions') }}
       where content_id in (select content_id from {{ ref('video_content') }}))
union all
select 'rows', (select count(*) from {{ ref('video_content_performance') }}),
       (select count(*) from {{ ref('video_content') }})
where (select count(*) from {{ ref('video_content_performance') }}) <> (select count(*) from {{ ref('video_content') }})
