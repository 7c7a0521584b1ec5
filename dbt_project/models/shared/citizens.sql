{#- A delta run (docs/conform-publish.md) builds the rows of the changed citizens only. -#}
-- depends_on: {{ ref('int_citizens_changed') }}
with

located as (
    select * from {{ ref('int_citizens_located') }}
    where {{ only_changed('citizen_id', 'int_citizens_changed') }}
),

activity as (
    select * from {{ ref('int_activities_aggregated_to_citizens') }}
),

final as (
    select
        located.citizen_id,
        located.full_name,
        located.birth_date,
        located.death_date,
        located.sex,
        located.ethnicity,
        located.household_id,
        located.has_registered_household,
        located.residence_province_code as historic_province_code,
        located.historic_province_name,
        located.current_province_code,
        located.current_province_name,
        located.residence_recorded_on,
        coalesce(activity.is_tax_registered, false) as is_tax_registered,
        coalesce(activity.tax_filings, 0) as tax_filings,
        activity.last_tax_filed_on,
        coalesce(activity.is_insured, false) as is_insured,
        coalesce(activity.contributing_months, 0) as contributing_months,
        activity.highest_grade as highest_enrolled_grade,
        activity.highest_grade_school_year as highest_enrolled_school_year,
        located.source_updated_at
    from located
    left join activity on located.citizen_id = activity.citizen_id
)

select * from final
