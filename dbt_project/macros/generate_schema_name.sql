{#- Shared models build into the write-audit-publish build schema (a full run: shared_a or shared_b; a delta run:
    shared_delta, their changed keys only); every other layer into its own schema. With var ndc_schema_prefix
    (`ndc.conform.verify`) every layer builds into `<prefix><schema>` instead, apart from the platform's: a full
    build of the same landing data to compare the published version with. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- set build_schema = var('ndc_build_schema') -%}
    {%- if build_schema not in ['shared_a', 'shared_b'] -%}
        {{ exceptions.raise_compiler_error("var ndc_build_schema must be shared_a or shared_b, got " ~ build_schema) }}
    {%- endif -%}
    {%- set prefix = var('ndc_schema_prefix', '') -%}
    {%- if prefix and not modules.re.match('^[a-z][a-z0-9_]*_$', prefix) -%}
        {{ exceptions.raise_compiler_error(
            "var ndc_schema_prefix must be lower case letters, digits and _ ending in _, got " ~ prefix) }}
    {%- endif -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- elif prefix -%}
        {{ prefix }}{{ custom_schema_name | trim }}
    {%- elif custom_schema_name | trim == 'shared' and is_delta() -%}
        shared_delta
    {%- elif custom_schema_name | trim == 'shared' -%}
        {{ build_schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
