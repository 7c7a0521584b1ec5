{#- What the other national databases know about each citizen, through identity resolution: tax registration and
    filings, social insurance and contributing months, and the highest enrolment. One row per linked citizen. -#}
with

resolved as (
    select * from {{ ref('int_identities_resolved') }}
),

tax_filings as (
    select * from {{ ref('stg_taxation__tax_filings') }}
),

contributions as (
    select * from {{ ref('stg_insurance__contributions') }}
),

enrolments as (
    select * from {{ ref('stg_education__enrolments') }}
),

links as (
    select * from resolved
    where citizen_id is not null
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
    select citizen_id from taxpayer_links
    union
    select citizen_id from insured_links
    union
    select citizen_id from highest_enrolments
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
        coalesce(contributed.contributing_months, 0) as contributing_months
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
