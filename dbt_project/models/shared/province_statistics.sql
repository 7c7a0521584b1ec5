{#- Per current province (the 34 from 2025-07-01) and month since the platform's start date: every figure is
    counted by the province a record belongs to today, whatever code it was recorded under, so months before and
    after the reorganisation compare. Population is the living residents at the month's end, by their current
    residence; births and deaths before the first month count in its population. -#}
with

provinces as (
    select * from {{ ref('int_provinces_effective_dated') }}
),

citizens as (
    select * from {{ ref('int_citizens_located') }}
),

vital_events as (
    select * from {{ ref('int_vital_events_counted_by_province_month') }}
),

moves as (
    select * from {{ ref('int_moves_counted_by_province_month') }}
),

enterprises as (
    select * from {{ ref('int_enterprises_counted_by_province_month') }}
),

taxpayers as (
    select * from {{ ref('int_taxpayers_counted_by_province_month') }}
),

insured_workers as (
    select * from {{ ref('int_insured_workers_counted_by_province_month') }}
),

enrolled as (
    select * from {{ ref('int_students_counted_by_province_school_year') }}
),

current_provinces as (
    select
        province_code as current_province_code,
        province_name as current_province_name
    from provinces
    where valid_to = date '9999-12-31'
),

bounds as (
    select
        date '{{ var("ndc_start_date") }}' as first_month,
        greatest(
            date_trunc('month', max(residence_recorded_on))::date, date '{{ var("ndc_start_date") }}'
        ) as last_month
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
        vital_events.current_province_code,
        greatest(vital_events.month, bounds.first_month) as month,
        sum(vital_events.births - vital_events.deaths) as population_change
    from vital_events
    cross join bounds
    group by 1, 2
),

students as (
    select
        enrolled.current_province_code,
        months.month,
        enrolled.students
    from enrolled
    inner join months
        on
            enrolled.school_year_starts_on <= months.month
            and enrolled.school_year_starts_on + interval '1 year' > months.month
),

final as (
    select
        spine.current_province_code,
        spine.current_province_name,
        spine.month,
        coalesce(sum(population_changes.population_change) over (
            partition by spine.current_province_code order by spine.month
        ), 0)::bigint as population,
        coalesce(vital_events.births, 0) as births,
        coalesce(vital_events.deaths, 0) as deaths,
        coalesce(moves.moves_in, 0) as moves_in,
        coalesce(moves.moves_out, 0) as moves_out,
        coalesce(enterprises.enterprises_opened, 0) as enterprises_opened,
        coalesce(enterprises.enterprises_closed, 0) as enterprises_closed,
        coalesce(taxpayers.taxpayers_registered, 0) as taxpayers_registered,
        coalesce(insured_workers.insured_workers, 0) as insured_workers,
        coalesce(students.students, 0) as students
    from spine
    left join population_changes
        on
            spine.current_province_code = population_changes.current_province_code
            and spine.month = population_changes.month
    left join vital_events
        on spine.current_province_code = vital_events.current_province_code and spine.month = vital_events.month
    left join moves on spine.current_province_code = moves.current_province_code and spine.month = moves.month
    left join enterprises
        on spine.current_province_code = enterprises.current_province_code and spine.month = enterprises.month
    left join taxpayers
        on spine.current_province_code = taxpayers.current_province_code and spine.month = taxpayers.month
    left join insured_workers
        on
            spine.current_province_code = insured_workers.current_province_code
            and spine.month = insured_workers.month
    left join students
        on spine.current_province_code = students.current_province_code and spine.month = students.month
)

select * from final
