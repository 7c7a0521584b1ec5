{#- Records whose reference to another record resolves to nothing (an orphan). They are loaded and kept; this
    lists them, with the reference that failed, for identity_exceptions.

    Incremental, at the cost of the change: each check re-examines the records loaded since its last run, the
    records referring to a target loaded, deleted or restored since, and the orphans it already lists. An orphan
    that resolves (or whose record is gone) stays as a row with `is_current` false, stamped with the run's number,
    so the delta of identity_exceptions finds it. -#}
{{ config(
    materialized='incremental',
    unique_key='_ndc_key',
    incremental_strategy='replace_keys',
    on_schema_change='fail',
    indexes=[
        {'columns': ['_ndc_key'], 'unique': True},
        {'columns': ['dataset', 'record_key']},
        {'columns': ['conform_seq']},
        {'columns': ['conformed_through']},
    ]
) }}
{#- (source, dataset, staging model, key, reference column, target staging model, target key, reason,
     target's landing source and table, target's landing key) -#}
{%- set checks = [
    ('population', 'citizens', 'stg_population__citizens', 'citizen_id', 'household_id',
     'stg_population__households', 'household_id', 'household_not_found', 'population', 'households', 'household_id'),
    ('population', 'households', 'stg_population__households', 'household_id', 'head_citizen_id',
     'stg_population__citizens', 'citizen_id', 'head_citizen_not_found', 'population', 'citizens', 'pin'),
    ('population', 'residence_changes', 'stg_population__residence_changes', 'residence_change_id', 'citizen_id',
     'stg_population__citizens', 'citizen_id', 'citizen_not_found', 'population', 'citizens', 'pin'),
    ('taxation', 'filings', 'stg_taxation__tax_filings', 'tax_filing_id', 'taxpayer_id',
     'stg_taxation__taxpayers', 'taxpayer_id', 'taxpayer_not_found', 'taxation', 'taxpayers', 'taxpayer_id'),
    ('taxation', 'payments', 'stg_taxation__tax_payments', 'tax_payment_id', 'taxpayer_id',
     'stg_taxation__taxpayers', 'taxpayer_id', 'taxpayer_not_found', 'taxation', 'taxpayers', 'taxpayer_id'),
    ('insurance', 'contributions', 'stg_insurance__contributions', 'contribution_id', 'insurance_code',
     'stg_insurance__insured_persons', 'insurance_code', 'insured_person_not_found', 'insurance', 'insured_people',
     'insurance_code'),
    ('enterprise', 'branches', 'stg_enterprise__branches', 'branch_code', 'enterprise_code',
     'stg_enterprise__enterprises', 'enterprise_code', 'enterprise_not_found', 'enterprise', 'enterprises',
     'enterprise_code'),
    ('education', 'enrolments', 'stg_education__enrolments', 'enrolment_id', 'student_id',
     'stg_education__students', 'student_id', 'student_not_found', 'education', 'students', 'student_id'),
    ('education', 'enrolments', 'stg_education__enrolments', 'enrolment_id', 'school_id',
     'stg_education__schools', 'school_id', 'school_not_found', 'education', 'schools', 'school_id'),
] -%}
{#- Each staging model checked or referred to, once, as an import CTE named after it. -#}
{%- set imported = [] -%}
{%- for check in checks -%}
    {%- for model in (check[2], check[5]) if model not in imported -%}
        {%- do imported.append(model) -%}
    {%- endfor -%}
{%- endfor %}

-- Jinja branches around whole CTEs confuse sqlfluff's indentation rule (its fixes do not converge here).
-- noqa: disable=LT02
with

{% for model in imported %}
    {{ model }} as not materialized (
        select * from {{ ref(model) }}
    ),
{% endfor %}

{%- for checked in checks %}
    {%- set source_name, dataset, model, key, reference, target, target_key, reason = checked[:8] %}
    {%- set target_source, target_table, target_landing_key = checked[8:] %}
    {%- set check = reason ~ '_' ~ loop.index %}
    {%- set prefix = "'" ~ dataset ~ ":" ~ reference ~ ":'" %}
    {%- set records_to_check = check ~ '_candidates' if is_incremental() else model %}
    {%- if is_incremental() %}

        {{ check }}_keys as (
            -- records loaded since this model's last run
            select {{ prefix }} || records.{{ key }}::text as _ndc_key
            from {{ model }} as records
            where records.loaded_at > {{ last_run_horizon() }}
            union
            -- records referring to a target loaded, deleted or restored since
            select {{ prefix }} || records.{{ key }}::text as _ndc_key
            from {{ model }} as records
            where
                records.{{ reference }} in (
                    select landed.{{ target_landing_key }}
                    from {{ source(target_source, target_table) }} as landed
                    where landed._ndc_loaded_at > {{ last_run_horizon() }}
                )
            union
            -- the orphans already listed
            select previous._ndc_key
            from {{ this }} as previous
            where previous.is_current and previous._ndc_key like {{ prefix }} || '%'
        ),

        -- the records to check, found first (materialized: the planner would otherwise check every record)
        {{ check }}_candidates as materialized (
            select
                records.{{ key }},
                records.{{ reference }},
                records.loaded_at
            from {{ model }} as records
            where {{ prefix }} || records.{{ key }}::text in (select {{ check }}_keys._ndc_key from {{ check }}_keys)
        ),
    {%- endif %}

    {{ check }} as (
        select
            {{ prefix }} || records.{{ key }}::text as _ndc_key,
            '{{ source_name }}' as source_name,
            '{{ dataset }}' as dataset,
            records.{{ key }}::text as record_key,
            '{{ reason }}' as exception_reason,
            '{{ reference }}' as reference_column,
            records.loaded_at
        from {{ records_to_check }} as records
        where
            records.{{ reference }} is not null
            and not exists (
                select 1 from {{ target }} as targets
                where targets.{{ target_key }} = records.{{ reference }}
            )
    ),

    {%- if is_incremental() %}

        {{ check }}_rows as (
            -- an orphan, or a listed orphan that is one no more
            select
                {{ check }}_keys._ndc_key,
                coalesce({{ check }}.source_name, previous.source_name) as source_name,
                coalesce({{ check }}.dataset, previous.dataset) as dataset,
                coalesce({{ check }}.record_key, previous.record_key) as record_key,
                '{{ reason }}' as exception_reason,
                '{{ reference }}' as reference_column,
                coalesce({{ check }}.loaded_at, previous.loaded_at) as loaded_at,
                {{ check }}._ndc_key is not null as is_current,
                -- an orphan still an orphan (or still resolved) keeps its stamp
                case
                    when
                        previous._ndc_key is not null
                        and previous.is_current = ({{ check }}._ndc_key is not null)
                        and previous.loaded_at = coalesce({{ check }}.loaded_at, previous.loaded_at)
                        then previous.conform_seq
                    else {{ conform_seq() }}
                end as conform_seq
            from {{ check }}_keys
            left join {{ check }} on {{ check }}_keys._ndc_key = {{ check }}._ndc_key
            left join {{ this }} as previous on {{ check }}_keys._ndc_key = previous._ndc_key
            where {{ check }}._ndc_key is not null or previous._ndc_key is not null
        ),
    {%- else %}
        {{ check }}_rows as (
            select
                *,
                true as is_current,
                {{ conform_seq() }} as conform_seq
            from {{ check }}
        ),
    {%- endif %}


    {%- endfor %}

unioned as (
    {%- for check in checks %}
        select * from {{ check[7] }}_{{ loop.index }}_rows
        {% if not loop.last %}union all{% endif %}
    {%- endfor %}
),

final as (
    select
        *,
        false as _ndc_removed,
        {{ conformed_through() }} as conformed_through
    from unioned
)

select * from final
