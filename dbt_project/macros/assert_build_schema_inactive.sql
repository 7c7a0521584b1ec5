{#- Refuse to build shared models into the schema consumers are reading: dbt replaces a table with
    DROP ... CASCADE, which would drop the published shared.<model> views. `ndc conform` and the conform DAG
    always choose the inactive schema; this stops a hand-run `dbt build` from doing otherwise. -#}
{% macro assert_build_schema_inactive() %}
    {%- if execute and not is_delta() and not var('ndc_schema_prefix', '') -%}
        {%- set publications = adapter.get_relation(
            database=target.database, schema='ndc_meta', identifier='publications') -%}
        {%- if publications is not none -%}
            {%- set active = run_query(
                "select build_schema from ndc_meta.publications order by publication_id desc limit 1") -%}
            {%- if active.rows | length > 0 and active.rows[0][0] == var('ndc_build_schema') -%}
                {{ exceptions.raise_compiler_error(
                    "refusing to build into " ~ var('ndc_build_schema') ~ ": it is the published build that"
                    ~ " consumers read. Build into the other schema (`ndc conform` chooses it).") }}
            {%- endif -%}
        {%- endif -%}
    {%- endif -%}
{% endmacro %}
