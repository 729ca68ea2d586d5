-- The sales records that did not load: each with its blob, line, reason and its raw line
-- Fernet-encrypted (it may hold sensitive values). Replaced per blob with the blob's rows.
create table if not exists bronze.sales_quarantine (
    blob_name           text not null,
    line_number         bigint not null,
    raw_line_encrypted  text not null,
    reason              text not null,
    _bronze_load_ts     timestamptz not null,
    _bronze_batch_id    uuid not null
);
create index if not exists sales_quarantine_blob_name_idx on bronze.sales_quarantine (blob_name, line_number);
