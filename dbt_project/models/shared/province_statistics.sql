{#- Per current province (the 34 from 2025-07-01) and month: every figure is counted by the province a record
    belongs to today, whatever code it was recorded under, so months before and after the reorganisation compare.
    Population is the living residents at the month's end, by their current residence. -#}
with

mapping as (
    select * from {{ ref('province_mapping') }}
),

current_provinces as (
    select
        province_code as current_province_code,
        province_name as current_province_name
    from {{ ref('int_provinces_effective_dated') }}
    where valid_to = date '9999-12-31'
),

citizens as (
    select * from {{ ref('int_citizens_located') }}
),

bounds as (
    select
        date '2024-07-01' as first_month,
        greatest(date_trunc('month', max(residence_recorded_on))::date, date '2024-07-01') as last_month
    from citizens
),

months as (
    select generate_series(bounds.first_month, bounds.last_month, interval '1 month')::date as month
    from bounds
),

spine as (
    select
        current_provinces.current_province_code,
        current_provinces.current_province_name,
        months.month
    from current_provinces
    cross join months
),

population_changes as (
    select
        citizens.current_province_code,
        greatest(date_trunc('month', citizens.birth_date)::date, bounds.first_month) as month,
        count(*) as population_change
    from citizens
    cross join bounds
    group by 1, 2
    union all
    select
        citizens.current_province_code,
        greatest(date_trunc('month', citizens.death_date)::date, bounds.first_month) as month,
        -count(*) as population_change
    from citizens
    cross join bounds
    where citizens.death_date is not null
    group by 1, 2
),

population_by_month as (
    select
        current_province_code,
        month,
        sum(population_change) as population_change
    from population_changes
    group by 1, 2
),

births as (
    select
        current_province_code,
        date_trunc('month', birth_date)::date as month,
        count(*) as births
    from citizens
    group by 1, 2
),

deaths as (
    select
        current_province_code,
        date_trunc('month', death_date)::date as month,
        count(*) as deaths
    from citizens
    where death_date is not null
    group by 1, 2
),

moves as (
    select
        from_mapping.new_code as from_current_code,
        to_mapping.new_code as to_current_code,
        date_trunc('month', changes.moved_on)::date as month
    from {{ ref('stg_population__residence_changes') }} as changes
    inner join mapping as from_mapping on changes.from_province_code = from_mapping.old_code
    inner join mapping as to_mapping on changes.to_province_code = to_mapping.old_code
    where from_mapping.new_code != to_mapping.new_code
),

moves_in as (
    select
        to_current_code as current_province_code,
        month,
        count(*) as moves_in
    from moves
    group by 1, 2
),

moves_out as (
    select
        from_current_code as current_province_code,
        month,
        count(*) as moves_out
    from moves
    group by 1, 2
),

enterprises as (
    select
        enterprises.enterprise_code,
        enterprises.registered_on,
        mapping.new_code as current_province_code
    from {{ ref('stg_enterprise__enterprises') }} as enterprises
    inner join mapping on enterprises.province_code = mapping.old_code
),

enterprises_opened as (
    select
        current_province_code,
        date_trunc('month', registered_on)::date as month,
        count(*) as enterprises_opened
    from enterprises
    group by 1, 2
),

enterprises_closed as (
    select
        enterprises.current_province_code,
        date_trunc('month', events.effective_on)::date as month,
        count(distinct events.enterprise_code) as enterprises_closed
    from {{ ref('stg_enterprise__status_events') }} as events
    inner join enterprises on events.enterprise_code = enterprises.enterprise_code
    where events.status = 'dissolved'
    group by 1, 2
),

taxpayers_registered as (
    select
        mapping.new_code as current_province_code,
        date_trunc('month', taxpayers.registered_on)::date as month,
        count(*) as taxpayers_registered
    from {{ ref('stg_taxation__taxpayers') }} as taxpayers
    inner join mapping on taxpayers.tax_office_province_code = mapping.old_code
    group by 1, 2
),

insured_workers as (
    select
        mapping.new_code as current_province_code,
        contributions.contribution_month as month,
        count(distinct contributions.insurance_code) as insured_workers
    from {{ ref('stg_insurance__contributions') }} as contributions
    inner join {{ ref('stg_insurance__insured_persons') }} as insured
        on contributions.insurance_code = insured.insurance_code
    inner join mapping on insured.residence_province_code = mapping.old_code
    group by 1, 2
),

enrolled as (
    -- a school year "YYYY-YYYY" runs from July to June (as the ministry's exports are cut)
    select
        mapping.new_code as current_province_code,
        make_date(left(enrolments.school_year, 4)::int, 7, 1) as year_start,
        count(distinct enrolments.student_id) as students
    from {{ ref('stg_education__enrolments') }} as enrolments
    inner join {{ ref('stg_education__schools') }} as schools on enrolments.school_id = schools.school_id
    inner join mapping on schools.province_code = mapping.old_code
    group by 1, 2
),

students as (
    select
        enrolled.current_province_code,
        months.month,
        enrolled.students
    from enrolled
    inner join months
        on enrolled.year_start <= months.month and enrolled.year_start + interval '1 year' > months.month
),

final as (
    select
        spine.current_province_code,
        spine.current_province_name,
        spine.month,
        coalesce(sum(population_by_month.population_change) over (
            partition by spine.current_province_code order by spine.month
        ), 0)::bigint as population,
        coalesce(births.births, 0) as births,
        coalesce(deaths.deaths, 0) as deaths,
        coalesce(moves_in.moves_in, 0) as moves_in,
        coalesce(moves_out.moves_out, 0) as moves_out,
        coalesce(enterprises_opened.enterprises_opened, 0) as enterprises_opened,
        coalesce(enterprises_closed.enterprises_closed, 0) as enterprises_closed,
        coalesce(taxpayers_registered.taxpayers_registered, 0) as taxpayers_registered,
        coalesce(insured_workers.insured_workers, 0) as insured_workers,
        coalesce(students.students, 0) as students
    from spine
    left join population_by_month
        on
            spine.current_province_code = population_by_month.current_province_code
            and spine.month = population_by_month.month
    left join births on spine.current_province_code = births.current_province_code and spine.month = births.month
    left join deaths on spine.current_province_code = deaths.current_province_code and spine.month = deaths.month
    left join moves_in
        on spine.current_province_code = moves_in.current_province_code and spine.month = moves_in.month
    left join moves_out
        on spine.current_province_code = moves_out.current_province_code and spine.month = moves_out.month
    left join enterprises_opened
        on
            spine.current_province_code = enterprises_opened.current_province_code
            and spine.month = enterprises_opened.month
    left join enterprises_closed
        on
            spine.current_province_code = enterprises_closed.current_province_code
            and spine.month = enterprises_closed.month
    left join taxpayers_registered
        on
            spine.current_province_code = taxpayers_registered.current_province_code
            and spine.month = taxpayers_registered.month
    left join insured_workers
        on
            spine.current_province_code = insured_workers.current_province_code
            and spine.month = insured_workers.month
    left join students
        on spine.current_province_code = students.current_province_code and spine.month = students.month
)

select * from final
