-- bronze.sales as it was before bronze kept every value as it arrived: its typed source columns
-- become text (each value cast, so its rows stay), and total_amount (silver derives it now) goes.
-- A warehouse whose bronze.sales is already text, or has none yet, is left as it is.
do $$
declare c record;
begin
    for c in select column_name from information_schema.columns
             where table_schema = 'bronze' and table_name = 'sales' and data_type <> 'text'
               and column_name not in ('source_line', 'total_amount')
               and column_name not like '\_bronze\_%' loop
        execute format('alter table bronze.sales alter column %I type text using %I::text', c.column_name, c.column_name);
    end loop;
    if to_regclass('bronze.sales') is not null then
        alter table bronze.sales drop column if exists total_amount;
    end if;
end $$;
