-- silver.video_content and silver.video_content_genres became incremental by arrival day, and
-- the genres gained arrival_date. A table built by the earlier full-table models lacks that
-- column and the bookkeeping the incremental build reads, so both are dropped once: the next
-- video build makes them again from all of bronze (they hold nothing bronze does not). A
-- warehouse that already has the new shape is not touched.
do $$
begin
    if to_regclass('silver.video_content_genres') is not null and not exists (
        select from information_schema.columns
        where table_schema = 'silver' and table_name = 'video_content_genres' and column_name = 'arrival_date'
    ) then
        drop table silver.video_content_genres;
        drop table if exists silver.video_content;
    end if;
end $$;
