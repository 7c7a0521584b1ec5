{#- Shared models build into the write-audit-publish build schema; every other layer into its own schema. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- set build_schema = var('ndc_build_schema') -%}
    {%- if build_schema not in ['shared_a', 'shared_b'] -%}
        {{ exceptions.raise_compiler_error("var ndc_build_schema must be shared_a or shared_b, got " ~ build_schema) }}
    {%- endif -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- elif custom_schema_name | trim == 'shared' -%}
        {{ build_schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
