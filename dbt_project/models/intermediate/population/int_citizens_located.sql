{#- Each citizen's residence: the province in force on the record's Việt Nam date, and its 2025 province;
    and whether the household is registered (an unknown one is flagged, never dropped).
    Incremental (1 row per citizen, updated in place, at the cost of the change): the citizens loaded or deleted
    at the source since the last run and the citizens of households loaded or deleted since are recomputed; a
    citizen no longer current at the source is removed (`replace_keys`). Each rewritten row carries the conform
    run's number (`conform_seq`), which is how the shared `citizens` delta finds it. `name_key` is what identity
    resolution matches a full name on (indexed with the birth date). -#}
{{ config(
    materialized='incremental',
    unique_key='citizen_id',
    incremental_strategy='replace_keys',
    on_schema_change='fail',
    indexes=[
        {'columns': ['citizen_id'], 'unique': True},
        {'columns': ['household_id']},
        {'columns': ['name_key', 'birth_date']},
        {'columns': ['conform_seq']},
        {'columns': ['conformed_through']},
    ]
) }}

with

citizens as not materialized (
    select * from {{ ref('stg_population__citizens') }}
),

households as not materialized (
    select * from {{ ref('stg_population__households') }}
),

provinces as not materialized (
    select * from {{ ref('int_provinces_effective_dated') }}
),

mapping as not materialized (
    select * from {{ ref('province_mapping') }}
),

{%- if is_incremental() %}

    changed_keys as (
    -- citizens loaded, deleted or restored at the source since the last run
        select landed.pin as citizen_id
        from {{ source('population', 'citizens') }} as landed
        where landed._ndc_loaded_at > {{ last_run_horizon() }}
        union
        -- the citizens of a household loaded, deleted or restored since (registered or not)
        select located.citizen_id
        from {{ this }} as located
        inner join {{ source('population', 'households') }} as landed
            on located.household_id = landed.household_id
        where landed._ndc_loaded_at > {{ last_run_horizon() }}
    ),

{%- endif %}

changed_citizens as (
    select * from citizens
    {%- if is_incremental() %}
        where citizen_id in (select changed_keys.citizen_id from changed_keys)
    {%- endif %}
),

dated as (
    select
        *,
        {{ vietnam_date('source_updated_at') }} as residence_recorded_on
    from changed_citizens
),

computed as (
    select
        dated.*,
        provinces.province_name as historic_province_name,
        mapping.new_code as current_province_code,
        mapping.new_name as current_province_name,
        households.household_id is not null as has_registered_household,
        {{ name_key('dated.full_name') }} as name_key,
        {{ conform_seq() }} as conform_seq,
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
),

final as (
    {{ rows_for_keys('computed', 'changed_keys', 'citizen_id') }}
)

select * from final
