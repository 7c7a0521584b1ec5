{#- Students enrolled per current province (of the school) and school year. A school year "YYYY-YYYY" runs from
    July to June, as the ministry's exports are cut: it starts on 1 July of its first year. -#}
with

enrolments as (
    select * from {{ ref('stg_education__enrolments') }}
),

schools as (
    select * from {{ ref('stg_education__schools') }}
),

mapping as (
    select * from {{ ref('province_mapping') }}
),

final as (
    select
        mapping.new_code as current_province_code,
        make_date(left(enrolments.school_year, 4)::int, 7, 1) as school_year_starts_on,
        count(distinct enrolments.student_id) as students
    from enrolments
    inner join schools on enrolments.school_id = schools.school_id
    inner join mapping on schools.province_code = mapping.old_code
    group by 1, 2
)

select * from final
