-- The video records and documents that did not load (line, exact bytes, a readable rendering,
-- reason), replaced per file with its rows; and the columns new content fields added.
create table if not exists bronze.video_quarantine (
    source_file      text not null,
    arrival_date     date not null,
    line_number      bigint not null,
    raw              text not null,
    reason           text not null,
    _bronze_load_ts  timestamptz not null,
    _bronze_batch_id uuid not null
);
alter table bronze.video_quarantine add column if not exists raw_bytes bytea;
create index if not exists video_quarantine_source_file_idx on bronze.video_quarantine (source_file);
create table if not exists bronze.video_schema_changes (
    table_name   text not null,
    column_name  text not null,
    pg_type      text not null,
    source_file  text not null,
    added_at     timestamptz not null default now(),
    primary key (table_name, column_name)
);
