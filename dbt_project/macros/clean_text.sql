{#- Vietnamese text as consumers should compare it: Unicode NFC (one code point per accented letter), trimmed,
    and empty as null. The gate already repairs NFD text at extraction, so the cheap NFC check (≈ 0.3 µs a value)
    almost always spares the normalisation (≈ 2 µs); this keeps staging right whatever lands. -#}
{% macro clean_text(column) -%}
    nullif(btrim(case when {{ column }} is nfc normalized then {{ column }} else normalize({{ column }}, nfc) end), '')
{%- endmacro %}

{#- The key a full name is matched on (identity resolution): NFC (from staging), lower case, single spaces. -#}
{% macro name_key(column) -%}
    nullif(lower(case
        when {{ column }} ~ '\s\s|\t|\n' then regexp_replace(btrim({{ column }}), '\s+', ' ', 'g')
        else btrim({{ column }})
    end), '')
{%- endmacro %}

{#- A timestamp's date in Việt Nam (UTC+7, no daylight saving): the date province codes are valid on. -#}
{% macro vietnam_date(column) -%}
    ({{ column }} at time zone 'Asia/Ho_Chi_Minh')::date
{%- endmacro %}

{#- Tables dbt has just built get planner statistics at once (autovacuum would come a minute later, after the
    models that read them have planned without). Views are skipped. -#}
{% macro analyze_table() -%}
    {%- if model.config.materialized in ('table', 'incremental', 'snapshot') -%}
        analyze {{ this }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
