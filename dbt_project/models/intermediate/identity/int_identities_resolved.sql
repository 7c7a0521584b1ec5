{#- Identity resolution, as the authorities match: the recorded PIN if there is one (it must exist and agree on
    the birth date); otherwise full name + date of birth, accepted only when exactly one citizen has them. An
    ambiguous or failed match is an exception with its reason, never a guess, and no record is dropped. -#}
with

person_records as (
    select * from {{ ref('int_person_records_unioned') }}
),

citizens as (
    select * from {{ ref('stg_population__citizens') }}
),

keyed_records as (
    select
        *,
        {{ name_key('full_name') }} as name_key
    from person_records
),

keyed_citizens as (
    select
        citizen_id,
        birth_date,
        {{ name_key('full_name') }} as name_key
    from citizens
),

name_birth_groups as (
    select
        name_key,
        birth_date,
        count(*) as candidates,
        min(citizen_id) as only_citizen_id
    from keyed_citizens
    where name_key is not null and birth_date is not null
    group by name_key, birth_date
),

matched as (
    select
        records.source_name,
        records.dataset,
        records.record_key,
        records.recorded_citizen_id,
        records.legacy_identifier_kind,
        records.legacy_identifier,
        records.loaded_at,
        by_pin.citizen_id as pin_citizen_id,
        by_pin.birth_date as pin_birth_date,
        records.birth_date,
        records.name_key,
        namesakes.only_citizen_id,
        coalesce(namesakes.candidates, 0) as name_birth_candidates
    from keyed_records as records
    left join keyed_citizens as by_pin
        on records.recorded_citizen_id = by_pin.citizen_id
    left join name_birth_groups as namesakes
        on
            records.recorded_citizen_id is null
            and records.name_key = namesakes.name_key
            and records.birth_date = namesakes.birth_date
),

decided as (
    select
        *,
        case
            when recorded_citizen_id is not null and pin_citizen_id is null then 'pin_not_found'
            when
                recorded_citizen_id is not null and birth_date is not null and birth_date != pin_birth_date
                then 'pin_birth_date_mismatch'
            when recorded_citizen_id is not null then null
            when name_key is null or birth_date is null then 'no_name_or_birth_date'
            when name_birth_candidates = 0 then 'no_citizen_with_name_and_birth_date'
            when name_birth_candidates > 1 then 'ambiguous_name_and_birth_date'
        end as exception_reason
    from matched
),

final as (
    select
        source_name,
        dataset,
        record_key,
        exception_reason,
        name_birth_candidates,
        legacy_identifier_kind,
        legacy_identifier,
        loaded_at,
        case when exception_reason is null then coalesce(pin_citizen_id, only_citizen_id) end as citizen_id,
        case
            when exception_reason is not null then null
            when recorded_citizen_id is not null then 'pin'
            else 'name_and_birth_date'
        end as match_method,
        recorded_citizen_id is not null as has_recorded_pin
    from decided
)

select * from final
