{#- Records whose reference to another record resolves to nothing (an orphan). They are loaded and kept; this
    lists them, with the reference that failed, for identity_exceptions. -#}
{%- set checks = [
    ('population', 'citizens', 'stg_population__citizens', 'citizen_id', 'household_id',
     'stg_population__households', 'household_id', 'household_not_found'),
    ('population', 'households', 'stg_population__households', 'household_id', 'head_citizen_id',
     'stg_population__citizens', 'citizen_id', 'head_citizen_not_found'),
    ('population', 'residence_changes', 'stg_population__residence_changes', 'residence_change_id', 'citizen_id',
     'stg_population__citizens', 'citizen_id', 'citizen_not_found'),
    ('taxation', 'filings', 'stg_taxation__tax_filings', 'tax_filing_id', 'taxpayer_id',
     'stg_taxation__taxpayers', 'taxpayer_id', 'taxpayer_not_found'),
    ('taxation', 'payments', 'stg_taxation__tax_payments', 'tax_payment_id', 'taxpayer_id',
     'stg_taxation__taxpayers', 'taxpayer_id', 'taxpayer_not_found'),
    ('insurance', 'contributions', 'stg_insurance__contributions', 'contribution_id', 'insurance_code',
     'stg_insurance__insured_persons', 'insurance_code', 'insured_person_not_found'),
    ('enterprise', 'branches', 'stg_enterprise__branches', 'branch_code', 'enterprise_code',
     'stg_enterprise__enterprises', 'enterprise_code', 'enterprise_not_found'),
    ('education', 'enrolments', 'stg_education__enrolments', 'enrolment_id', 'student_id',
     'stg_education__students', 'student_id', 'student_not_found'),
    ('education', 'enrolments', 'stg_education__enrolments', 'enrolment_id', 'school_id',
     'stg_education__schools', 'school_id', 'school_not_found'),
] -%}
{#- Each staging model checked or referred to, once, as an import CTE named after it. -#}
{%- set imported = [] -%}
{%- for check in checks -%}
    {%- for model in (check[2], check[5]) if model not in imported -%}
        {%- do imported.append(model) -%}
    {%- endfor -%}
{%- endfor %}

with

{% for model in imported %}
    {{ model }} as (
        select * from {{ ref(model) }}
    ),
{% endfor %}

{%- for source_name, dataset, model, key, reference, target, target_key, reason in checks %}
    {{ reason }}_{{ loop.index }} as (
        select
            '{{ source_name }}' as source_name,
            '{{ dataset }}' as dataset,
            records.{{ key }}::text as record_key,
            '{{ reason }}' as exception_reason,
            '{{ reference }}' as reference_column,
            records.loaded_at
        from {{ model }} as records
        where
            records.{{ reference }} is not null
            and not exists (
                select 1 from {{ target }} as targets
                where targets.{{ target_key }} = records.{{ reference }}
            )
    ),
{%- endfor %}

final as (
    {%- for check in checks %}
        select * from {{ check[7] }}_{{ loop.index }}
        {% if not loop.last %}union all{% endif %}
    {%- endfor %}
)

select * from final
