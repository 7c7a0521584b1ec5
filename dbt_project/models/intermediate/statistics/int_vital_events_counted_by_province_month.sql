{#- Births and deaths of citizens per current province and calendar month, whatever the month: each citizen is
    counted by the province their residence belongs to today, so months before and after the 2025 reorganisation
    compare. -#}
with

citizens as (
    select * from {{ ref('int_citizens_located') }}
),

births as (
    select
        current_province_code,
        date_trunc('month', birth_date)::date as month,
        1 as births,
        0 as deaths
    from citizens
),

deaths as (
    select
        current_province_code,
        date_trunc('month', death_date)::date as month,
        0 as births,
        1 as deaths
    from citizens
    where death_date is not null
),

vital_events as (
    select * from births
    union all
    select * from deaths
),

final as (
    select
        current_province_code,
        month,
        sum(births) as births,
        sum(deaths) as deaths
    from vital_events
    group by current_province_code, month
)

select * from final
