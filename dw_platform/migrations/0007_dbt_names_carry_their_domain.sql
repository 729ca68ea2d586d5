-- dbt names carry their domain where they would otherwise mislead: SoftCart's star schema
-- (gold.fact_sales read as the sales domain's; dim_date, dim_country, dim_category as shared
-- dimensions) and the customer domain's reference seeds (silver.country_aliases read as shared,
-- beside video_country_aliases). Each old table is renamed, keeping its rows (the incremental
-- fact keeps its history), or dropped if dbt built the new one already; nothing else is touched.
do $$
declare r record;
begin
    for r in select * from (values
                 ('gold', 'fact_sales', 'softcart_fact_sales'),
                 ('gold', 'dim_date', 'softcart_dim_date'),
                 ('gold', 'dim_country', 'softcart_dim_country'),
                 ('gold', 'dim_category', 'softcart_dim_category'),
                 ('silver', 'country_aliases', 'customer_country_aliases'),
                 ('silver', 'country_dial_codes', 'customer_country_dial_codes')
             ) as renamed (schema_name, old_name, new_name) loop
        if to_regclass(format('%I.%I', r.schema_name, r.old_name)) is null then
            continue;
        elsif to_regclass(format('%I.%I', r.schema_name, r.new_name)) is null then
            execute format('alter table %I.%I rename to %I', r.schema_name, r.old_name, r.new_name);
        else
            execute format('drop table %I.%I', r.schema_name, r.old_name);
        end if;
    end loop;
end $$;
