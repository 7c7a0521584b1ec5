{#- Incremental models (internal schemas, updated in place) take the landing rows loaded since their last run.
    "Since" must not skip a row committed late: an extract's merge stamps _ndc_loaded_at with its transaction's
    start and commits later. So each processed row records `conformed_through`: the start of the oldest other
    open transaction when this build began (or now), before which every stamped row is committed and visible;
    the next run takes rows loaded after the largest such value (a few rows may be taken twice, merged by key). -#}
{% macro conformed_through() -%}
    (
        select least(now(), min(xact_start))
        from pg_stat_activity
        where pid != pg_backend_pid() and xact_start is not null and datname = current_database()
    )
{%- endmacro %}

{% macro loaded_since_last_run(column) -%}
    {%- if is_incremental() -%}
        {{ column }} > (select coalesce(max(conformed_through), '-infinity'::timestamptz) from {{ this }})
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}
