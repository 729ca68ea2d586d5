-- The __domain__ records that did not load (no event_id, a value not of its declared type, the
-- wrong number of fields): each with its file, line, raw text and reason, replaced per file with
-- the file's rows (dw_platform/__domain__/ingest.py). `dw new-domain` numbered this migration.
create table if not exists bronze.__domain___quarantine (
    source_file      text not null,
    arrival_date     date not null,
    line_number      bigint not null,
    raw              text not null,
    reason           text not null,
    _bronze_load_ts  timestamptz not null,
    _bronze_batch_id uuid not null
);
create index if not exists __domain___quarantine_source_file_idx on bronze.__domain___quarantine (source_file);
