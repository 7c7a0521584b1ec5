{#- What the other national databases know about each citizen, through identity resolution: tax registration and
    filings, social insurance and contributing months, and the highest enrolment. One row per linked citizen.

    Incremental, at the cost of the change: a run recomputes the citizens at either end of a link that identity
    resolution rewrote since this model's last run (linked now, before, or when `citizens` was last published) and
    the citizens whose filings, contributions or enrolments were loaded, deleted or restored since. A recomputed
    citizen with no link left keeps a row of zeros, which `citizens` reads as it reads no row. -#}
{{ config(
    materialized='incremental',
    unique_key='citizen_id',
    incremental_strategy='replace_keys',
    on_schema_change='fail',
    indexes=[
        {'columns': ['citizen_id'], 'unique': True},
        {'columns': ['conform_seq']},
        {'columns': ['conformed_through']},
    ]
) }}

-- Jinja branches around whole CTEs confuse sqlfluff's indentation rule (its fixes do not converge here).
-- noqa: disable=LT02
with

resolved as not materialized (
    select * from {{ ref('int_identities_resolved') }}
),

tax_filings as not materialized (
    select * from {{ ref('stg_taxation__tax_filings') }}
),

contributions as not materialized (
    select * from {{ ref('stg_insurance__contributions') }}
),

enrolments as not materialized (
    select * from {{ ref('stg_education__enrolments') }}
),

{%- if is_incremental() %}

    relinked as (
        select * from resolved
        where conform_seq > {{ last_run_seq() }}
    ),

    changed_keys as (
        select relinked.citizen_id from relinked
        union
        select relinked.previous_citizen_id from relinked
        union
        select relinked.published_citizen_id from relinked
        union
        select resolved.citizen_id
        from {{ source('taxation', 'filings') }} as landed
        inner join resolved on resolved._ndc_key = 'taxpayers:' || landed.taxpayer_id
        where landed._ndc_loaded_at > {{ last_run_horizon() }}
        union
        select resolved.citizen_id
        from {{ source('insurance', 'contributions') }} as landed
        inner join resolved on resolved._ndc_key = 'insured_people:' || landed.insurance_code
        where landed._ndc_loaded_at > {{ last_run_horizon() }}
        union
        select resolved.citizen_id
        from {{ source('education', 'enrolments') }} as landed
        inner join resolved on resolved._ndc_key = 'students:' || landed.student_id
        where landed._ndc_loaded_at > {{ last_run_horizon() }}
    ),

{%- endif %}

links as (
    select * from resolved
    where
        citizen_id is not null
    {%- if is_incremental() %}
            and citizen_id in (select changed_keys.citizen_id from changed_keys)
        {%- endif %}
),

taxpayer_links as (
    select
        citizen_id,
        record_key as taxpayer_id
    from links
    where dataset = 'taxpayers'
),

filings as (
    select
        taxpayer_links.citizen_id,
        count(*) as tax_filings,
        max(tax_filings.filed_on) as last_tax_filed_on
    from tax_filings
    inner join taxpayer_links on tax_filings.taxpayer_id = taxpayer_links.taxpayer_id
    group by taxpayer_links.citizen_id
),

insured_links as (
    select
        citizen_id,
        record_key as insurance_code
    from links
    where dataset = 'insured_people'
),

contributed as (
    select
        insured_links.citizen_id,
        count(distinct contributions.contribution_month) as contributing_months,
        max(contributions.contribution_month) as last_contribution_month
    from contributions
    inner join insured_links on contributions.insurance_code = insured_links.insurance_code
    group by insured_links.citizen_id
),

highest_enrolments as (
    select distinct on (links.citizen_id)
        links.citizen_id,
        enrolments.grade as highest_grade,
        enrolments.school_year as highest_grade_school_year
    from enrolments
    inner join links
        on links.dataset = 'students' and enrolments.student_id = links.record_key
    order by links.citizen_id asc, enrolments.grade desc, enrolments.school_year desc
),

taxpayers as (
    select distinct citizen_id from taxpayer_links
),

insured as (
    select distinct citizen_id from insured_links
),

citizens as (
    {%- if is_incremental() %}
        select changed_keys.citizen_id from changed_keys
        where changed_keys.citizen_id is not null
    {%- else %}
        select citizen_id from taxpayer_links
        union
        select citizen_id from insured_links
        union
        select citizen_id from highest_enrolments
    {%- endif %}
),

final as (
    select
        citizens.citizen_id,
        filings.last_tax_filed_on,
        contributed.last_contribution_month,
        highest_enrolments.highest_grade,
        highest_enrolments.highest_grade_school_year,
        taxpayer.citizen_id is not null as is_tax_registered,
        coalesce(filings.tax_filings, 0) as tax_filings,
        insured.citizen_id is not null as is_insured,
        coalesce(contributed.contributing_months, 0) as contributing_months,
        citizens.citizen_id as _ndc_key,
        false as _ndc_removed,
        {{ conform_seq() }} as conform_seq,
        {{ conformed_through() }} as conformed_through
    from citizens
    left join taxpayers as taxpayer
        on citizens.citizen_id = taxpayer.citizen_id
    left join filings on citizens.citizen_id = filings.citizen_id
    left join insured
        on citizens.citizen_id = insured.citizen_id
    left join contributed on citizens.citizen_id = contributed.citizen_id
    left join highest_enrolments on citizens.citizen_id = highest_enrolments.citizen_id
)

select * from final
