-- The durable change event log of replication (dw_platform/replication/eventlog.py): one row per
-- captured change at an offset of its topic, the topics' next offsets, the relation shapes events
-- refer to, and how far each source's log goes and where the platform left its slot.
create table if not exists bronze.cdc_events (
    source_name          text,
    topic                text,
    "offset"             bigint,
    commit_lsn           pg_lsn,
    seq                  integer,
    lsn                  pg_lsn,
    op                   text,
    relation_id          bigint,
    event                jsonb,
    _bronze_load_ts      timestamptz,
    _bronze_batch_id     uuid,
    _bronze_source_file  text
);
create unique index if not exists cdc_events_topic_offset on bronze.cdc_events (topic, "offset");
create unique index if not exists cdc_events_position on bronze.cdc_events (source_name, commit_lsn, seq);
create index if not exists cdc_events_load_ts on bronze.cdc_events (_bronze_load_ts);
create table if not exists bronze.cdc_topics (
    topic        text primary key,
    source_name  text not null,
    schema_name  text not null,
    table_name   text not null,
    next_offset  bigint not null default 0,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);
create table if not exists bronze.cdc_relations (
    relation_id       bigserial primary key,
    source_name       text not null,
    relid             bigint not null,
    schema_name       text not null,
    table_name        text not null,
    replica_identity  text not null,
    columns           jsonb not null,
    fingerprint       text not null,
    first_commit_lsn  pg_lsn not null,
    created_at        timestamptz not null default now(),
    unique (source_name, fingerprint)
);
create table if not exists bronze.cdc_capture (
    source_name        text primary key,
    slot_name          text not null,
    logged_commit_lsn  pg_lsn not null default '0/0',
    logged_seq         integer not null default -1,
    events_logged      bigint not null default 0,
    updated_at         timestamptz not null default now()
);
alter table bronze.cdc_capture add column if not exists slot_lsn pg_lsn;
