{#- Vietnamese text as consumers should compare it: Unicode NFC (one code point per accented letter), trimmed,
    and empty as null. The gate already repairs NFD text at extraction; this keeps staging right whatever lands. -#}
{% macro clean_text(column) -%}
    nullif(btrim(normalize({{ column }}, nfc)), '')
{%- endmacro %}

{#- The key a full name is matched on (identity resolution): NFC, lower case, single spaces. -#}
{% macro name_key(column) -%}
    nullif(lower(regexp_replace(btrim(normalize({{ column }}, nfc)), '\s+', ' ', 'g')), '')
{%- endmacro %}

{#- A timestamp's date in Việt Nam (UTC+7, no daylight saving): the date province codes are valid on. -#}
{% macro vietnam_date(column) -%}
    ({{ column }} at time zone 'Asia/Ho_Chi_Minh')::date
{%- endmacro %}
