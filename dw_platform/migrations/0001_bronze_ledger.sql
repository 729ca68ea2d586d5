-- The batch ledger (one entry per load attempt), the watermarks of incremental sources, the
-- record of the one-time shape migrations the loader applies to a declared bronze table
-- (bronze.shape_migrations: see dw_platform/lib/bronze.py), and the latest successful load of
-- each asset partition. A ledger or watermark table made before migrations existed gets the
-- columns it lacks; its entries stay.
create schema if not exists bronze;
create table if not exists bronze.batch_ledger (
    batch_id       uuid primary key,
    asset_key      text not null,
    target_table   text not null,
    partition_key  text not null,
    source         text not null,
    window_start   timestamptz,
    window_end     timestamptz,
    rows_loaded    bigint not null default 0,
    rows_replaced  bigint not null default 0,
    status         text not null,
    error          text,
    dagster_run_id text,
    started_at     timestamptz not null,
    finished_at    timestamptz
);
alter table bronze.batch_ledger
    add column if not exists rows_read bigint not null default 0,
    add column if not exists read_start timestamptz,
    add column if not exists read_end timestamptz,
    add column if not exists first_id bigint,
    add column if not exists last_id bigint,
    add column if not exists backend_pid integer,
    add column if not exists backend_start timestamptz,
    add column if not exists content_sha256 text,
    alter column finished_at drop not null,
    drop constraint if exists batch_ledger_status_check;
alter table bronze.batch_ledger add constraint batch_ledger_status_check
    check (status in ('running', 'succeeded', 'failed', 'abandoned', 'identical'));
comment on column bronze.batch_ledger.content_sha256 is
    'SHA-256 of the file a load read (its content after decompression), to recognise a file sent again under another name';
create index if not exists batch_ledger_content_sha256 on bronze.batch_ledger (content_sha256)
    where content_sha256 is not null;
create index if not exists batch_ledger_asset_partition
    on bronze.batch_ledger (asset_key, partition_key, finished_at);
create index if not exists batch_ledger_running on bronze.batch_ledger (batch_id) where status = 'running';
create table if not exists bronze.etl_watermarks (
    watermark_key     text primary key,
    last_watermark_ts timestamp,
    last_run_ts       timestamptz not null,
    records_extracted bigint not null
);
alter table bronze.etl_watermarks
    add column if not exists last_watermark_id bigint,
    add column if not exists last_read_start timestamp,
    add column if not exists last_read_end timestamp,
    add column if not exists last_partition_key text;
comment on column bronze.etl_watermarks.records_extracted is
    'rows read from the source under this watermark key by all successful loads (per load: bronze.batch_ledger.rows_read)';
create table if not exists bronze.shape_migrations (
    table_name  text not null,
    migration   text not null,
    rows_moved  bigint not null,
    applied_at  timestamptz not null default now(),
    primary key (table_name, migration)
);
comment on table bronze.shape_migrations is
    'one-time changes of a bronze table''s shape or lineage columns, applied by the loader (dw_platform/lib/bronze.py)';
create or replace view bronze.partition_loads as
    select distinct on (asset_key, partition_key)
        asset_key, partition_key, target_table, batch_id, rows_read, rows_loaded, rows_replaced,
        window_start, window_end, read_start, read_end, first_id, last_id, started_at, finished_at, content_sha256
    from bronze.batch_ledger where status = 'succeeded'
    order by asset_key, partition_key, finished_at desc;
