-- The SoftCart access-log lines that did not parse (exact bytes, a readable rendering, reason),
-- replaced per file with its rows.
create table if not exists bronze.web_access_log_quarantine (
    source_file      text not null,
    line_number      bigint not null,
    raw_line         text not null,
    reason           text not null,
    _bronze_load_ts  timestamptz not null,
    _bronze_batch_id uuid not null
);
alter table bronze.web_access_log_quarantine add column if not exists raw_bytes bytea;
create index if not exists web_access_log_quarantine_file_idx
    on bronze.web_access_log_quarantine (source_file, line_number);
