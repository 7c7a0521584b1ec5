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
        {{ column }} > {{ last_run_horizon() }}
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}

{#- The landing horizon of this model's last run (rows loaded after it are new to it), read once when the model
    runs and written as a literal, so the planner estimates "loaded since" from the column's statistics (a
    subquery's value is unknown when planning: it guessed a third of every table). -#}
{% macro last_run_horizon() -%}
    {%- if execute and is_incremental() -%}
        {%- set found = run_query("select coalesce(max(conformed_through), '-infinity'::timestamptz)::text from "
                                  ~ this) -%}
        '{{ found.columns[0].values()[0] }}'::timestamptz
    {%- else -%}
        '-infinity'::timestamptz
    {%- endif -%}
{%- endmacro %}

{#- The largest run number this model's rows carry (0 for a full build), read once as a literal. -#}
{% macro last_run_seq() -%}
    {%- if execute and is_incremental() -%}
        {%- set found = run_query("select coalesce(max(conform_seq), 0) from " ~ this) -%}
        {{ found.columns[0].values()[0] | int }}::bigint
    {%- else -%}
        0::bigint
    {%- endif -%}
{%- endmacro %}

{#- ---- Conform at the cost of the change (docs/conform-publish.md) -------------------------------------------
    A conform run is `full` (every model rebuilt into the inactive build schema, published by a view switch) or
    `delta` (shared models built for their changed keys only into shared_delta, applied to the published tables in
    one transaction). `ndc.conform.run_plan` chooses and passes these vars; a hand-run `dbt build` is `full`. -#}
{% macro is_delta() -%}
    {{ return(var('ndc_conform_mode', 'full') == 'delta') }}
{%- endmacro %}

{#- The number of this conform run (ndc_meta.conform_runs): intermediate models stamp the rows they rewrite with
    it, so a row rewritten since a model was last published has conform_seq greater than that publication's. A
    hand-run build (no var) takes the next number, which any later publish counts as unpublished. -#}
{% macro conform_seq() -%}
    {%- if var('ndc_conform_seq', none) is not none -%}
        {{ var('ndc_conform_seq') | int }}::bigint
    {%- elif execute and adapter.get_relation(database=target.database, schema='ndc_meta',
                                               identifier='conform_runs') is not none -%}
        (select coalesce(max(conform_seq), 0) + 1 from ndc_meta.conform_runs)
    {%- else -%}
        1::bigint
    {%- endif -%}
{%- endmacro %}

{#- The conform run number and landing horizon of the last publication of a shared model (0 and -infinity if it
    was never published by a numbered run). -#}
{% macro _published(model) -%}
    {%- set published = var('ndc_published', {}) -%}
    {%- set entry = published[model] if published is mapping and model in published else {} -%}
    {{ return(entry if entry is mapping else {}) }}
{%- endmacro %}

{% macro published_seq(model) -%}
    {%- set entry = _published(model) -%}
    {{ (entry['seq'] if 'seq' in entry else 0) | int }}::bigint
{%- endmacro %}

{% macro published_horizon(model) -%}
    {%- set entry = _published(model) -%}
    {%- set since = entry['through'] if 'through' in entry else none -%}
    {%- if since -%} '{{ since | replace("'", "") }}'::timestamptz {%- else -%} '-infinity'::timestamptz {%- endif -%}
{%- endmacro %}

{#- A shared model in a delta run: only the rows of its changed keys (the keys listed by `changes`, a model of
    intermediate/changes). In a full run: every row. -#}
{% macro only_changed(column, changes, changes_column=none) -%}
    {%- if is_delta() -%}
        {{ column }} in (select {{ changes_column or column }} from {{ ref(changes) }})
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}

{#- Custom incremental strategy `replace_keys`: every `_ndc_key` the new rows carry is replaced (the target's
    `unique_key` column holds the same value, indexed); rows flagged
    `_ndc_removed` only delete (a key gone from the sources). The model's SQL yields one row per key it
    recomputed, removed or not (`rows_for_keys`). -#}
{% macro get_incremental_replace_keys_sql(arg_dict) -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set temp = arg_dict['temp_relation'] -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    delete from {{ target }} as target
    using {{ temp }} as changed
    where target.{{ adapter.quote(arg_dict['unique_key']) }} = changed._ndc_key;

    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ temp }} where not _ndc_removed;
{%- endmacro %}

{#- The rows an incremental model writes for the keys it recomputed (`keys`, a CTE of `key` values): the
    recomputed row of each key that still exists, else a `_ndc_removed` row (the `replace_keys` strategy deletes
    it). A full build writes every row. `_ndc_key` is the key the strategy replaces by. -#}
{% macro rows_for_keys(computed, keys, key) -%}
    {%- if is_incremental() -%}
        select
            {{ computed }}.*,
            {{ keys }}.{{ key }} as _ndc_key,
            {{ computed }}.{{ key }} is null as _ndc_removed
        from {{ keys }}
        left join {{ computed }} on {{ keys }}.{{ key }} = {{ computed }}.{{ key }}
    {%- else -%}
        select
            *,
            {{ key }} as _ndc_key,
            false as _ndc_removed
        from {{ computed }}
    {%- endif -%}
{%- endmacro %}
