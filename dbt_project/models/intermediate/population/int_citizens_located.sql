{#- Each citizen's residence: the province in force on the record's Việt Nam date, and its 2025 province;
    and whether the household is registered (an unknown one is flagged, never dropped).
    Incremental (1 row per citizen, updated in place): citizens loaded since the last run, those whose household
    was loaded since, and those whose household is gone; citizens deleted at the source are removed. -#}
{{ config(
    materialized='incremental',
    unique_key='citizen_id',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    post_hook="delete from {{ this }} as located where not exists (select from {{ ref('stg_population__citizens') }}
        as citizens where citizens.citizen_id = located.citizen_id)"
) }}

with

citizens as (
    select * from {{ ref('stg_population__citizens') }}
),

households as (
    select * from {{ ref('stg_population__households') }}
),

provinces as (
    select * from {{ ref('int_provinces_effective_dated') }}
),

mapping as (
    select * from {{ ref('province_mapping') }}
),

changed_citizens as (
    select * from citizens
    {%- if is_incremental() %}
        where
            {{ loaded_since_last_run('citizens.loaded_at') }}
            or citizens.household_id in (
                select loaded.household_id from households as loaded
                where {{ loaded_since_last_run('loaded.loaded_at') }}
            )
            or citizens.citizen_id in (
                select previous.citizen_id from {{ this }} as previous
                where
                    previous.has_registered_household
                    and not exists (
                        select from households
                        where households.household_id = previous.household_id
                    )
            )
    {%- endif %}
),

dated as (
    select
        *,
        {{ vietnam_date('source_updated_at') }} as residence_recorded_on
    from changed_citizens
),

final as (
    select
        dated.*,
        provinces.province_name as historic_province_name,
        mapping.new_code as current_province_code,
        mapping.new_name as current_province_name,
        households.household_id is not null as has_registered_household,
        {{ conformed_through() }} as conformed_through
    from dated
    left join provinces
        on
            dated.residence_province_code = provinces.province_code
            and dated.residence_recorded_on between provinces.valid_from and provinces.valid_to
    left join mapping
        on dated.residence_province_code = mapping.old_code
    left join households
        on dated.household_id = households.household_id
)

select * from final
