{#- Identity resolution, as the authorities match: the recorded PIN if there is one (it must exist and agree on
    the birth date); otherwise full name + date of birth, accepted only when exactly one citizen has them. An
    ambiguous or failed match is an exception with its reason, never a guess, and no record is dropped.

    Incremental, at the cost of the change: a run re-resolves the records loaded, deleted or restored since its
    last run, and the records a changed citizen can affect: those recording its PIN, those linked to it, those in
    its name-and-birth group, and every ambiguous one (a namesake leaving a group is not kept, so ambiguity is
    re-checked; there are few). A record gone from its source stays as a row with `is_current` false. Each row
    keeps the citizen it was linked to before this run (`previous_citizen_id`) and when `citizens` was last
    published (`published_citizen_id`), so the citizens whose activity changes are found both ends. -#}
{{ config(
    materialized='incremental',
    unique_key='_ndc_key',
    incremental_strategy='replace_keys',
    on_schema_change='fail',
    indexes=[
        {'columns': ['_ndc_key'], 'unique': True},
        {'columns': ['citizen_id']},
        {'columns': ['recorded_citizen_id']},
        {'columns': ['name_key', 'birth_date']},
        {'columns': ['conform_seq']},
        {'columns': ['conformed_through']},
    ]
) }}

{#- What a record resolves to: a re-resolved record whose values are all unchanged keeps its stamp. -#}
{%- set resolution = [
    'exception_reason', 'name_birth_candidates', 'legacy_identifier_kind', 'legacy_identifier', 'loaded_at',
    'citizen_id', 'match_method', 'has_recorded_pin', 'recorded_citizen_id', 'name_key', 'birth_date',
] %}
-- Jinja branches around whole CTEs confuse sqlfluff's indentation rule (its fixes do not converge here).
-- noqa: disable=LT02
with

person_records as not materialized (
    select * from {{ ref('int_person_records_unioned') }}
),

citizens as not materialized (
    select * from {{ ref('int_citizens_located') }}
),

{%- if is_incremental() %}

    changed_citizens as (
    -- citizens loaded, deleted or restored at the source since this model's last run
        select landed.pin as citizen_id
        from {{ source('population', 'citizens') }} as landed
        where landed._ndc_loaded_at > {{ last_run_horizon() }}
    ),

    changed_groups as (
        select distinct
            located.name_key,
            located.birth_date
        from citizens as located
        where located.citizen_id in (select changed_citizens.citizen_id from changed_citizens)
    ),

    changed_keys as (
    -- person records loaded, deleted or restored since
        select 'taxpayers:' || landed.taxpayer_id as _ndc_key
        from {{ source('taxation', 'taxpayers') }} as landed
        where landed._ndc_loaded_at > {{ last_run_horizon() }}
        union
        select 'insured_people:' || landed.insurance_code as _ndc_key
        from {{ source('insurance', 'insured_people') }} as landed
        where landed._ndc_loaded_at > {{ last_run_horizon() }}
        union
        select 'students:' || landed.student_id as _ndc_key
        from {{ source('education', 'students') }} as landed
        where landed._ndc_loaded_at > {{ last_run_horizon() }}
        union
        select 'legal_representatives:' || landed.enterprise_code || '|' || landed.pin as _ndc_key
        from {{ source('enterprise', 'legal_representatives') }} as landed
        where landed._ndc_loaded_at > {{ last_run_horizon() }}
        union
        -- records that a changed citizen can affect
        select previous._ndc_key
        from {{ this }} as previous
        where previous.recorded_citizen_id in (select changed_citizens.citizen_id from changed_citizens)
        union
        select previous._ndc_key
        from {{ this }} as previous
        where previous.citizen_id in (select changed_citizens.citizen_id from changed_citizens)
        union
        select previous._ndc_key
        from {{ this }} as previous
        inner join changed_groups
            on previous.name_key = changed_groups.name_key and previous.birth_date = changed_groups.birth_date
        union
        select previous._ndc_key
        from {{ this }} as previous
        where previous.exception_reason = 'ambiguous_name_and_birth_date'
    ),

{%- endif %}

keyed_records as (
    select
        *,
        dataset || ':' || record_key as _ndc_key,
        {{ name_key('full_name') }} as name_key
    from person_records
    {%- if is_incremental() %}
        where dataset || ':' || record_key in (select changed_keys._ndc_key from changed_keys)
    {%- endif %}
),

name_birth_groups as (
    select
        citizens.name_key,
        citizens.birth_date,
        count(*) as candidates,
        min(citizens.citizen_id) as only_citizen_id
    from citizens
    where
        citizens.name_key is not null and citizens.birth_date is not null
        {%- if is_incremental() %}
            and (citizens.name_key, citizens.birth_date) in (
                select
                    keyed_records.name_key,
                    keyed_records.birth_date
                from keyed_records
            )
        {%- endif %}
    group by citizens.name_key, citizens.birth_date
),

matched as (
    select
        records._ndc_key,
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
    left join citizens as by_pin
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

computed as (
    select
        _ndc_key,
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
        recorded_citizen_id is not null as has_recorded_pin,
        recorded_citizen_id,
        name_key,
        birth_date
    from decided
),

{%- if is_incremental() %}

    compared as (
        -- a record re-resolved to what it was keeps its stamp: nothing downstream needs to follow it
        select
            changed_keys._ndc_key,
            computed._ndc_key is not null as is_current,
            previous._ndc_key is not null as was_known,
            coalesce(previous.is_current, false) as was_current,
            md5(
                row(
                    {%- for c in resolution %}
                        computed.{{ c }}{% if not loop.last %},{% endif %}
                    {%- endfor %}
                )::text
            ) as computed_fingerprint,
            md5(
                row(
                    {%- for c in resolution %}
                        previous.{{ c }}{% if not loop.last %},{% endif %}
                    {%- endfor %}
                )::text
            ) as previous_fingerprint
        from changed_keys
        left join computed on changed_keys._ndc_key = computed._ndc_key
        left join {{ this }} as previous on changed_keys._ndc_key = previous._ndc_key
    ),

{%- endif %}

final as (
    {%- if is_incremental() %}
        select
            compared._ndc_key,
            coalesce(computed.source_name, previous.source_name) as source_name,
            coalesce(computed.dataset, previous.dataset) as dataset,
            coalesce(computed.record_key, previous.record_key) as record_key,
{%- for c in resolution %}
            computed.{{ c }},
{%- endfor %}
            compared.is_current,
            case
                when compared.unchanged then previous.previous_citizen_id else previous.citizen_id
            end as previous_citizen_id,
            case
                when previous.conform_seq > {{ published_seq('citizens') }} then previous.published_citizen_id
                else previous.citizen_id
            end as published_citizen_id,
            false as _ndc_removed,
            case when compared.unchanged then previous.conform_seq else {{ conform_seq() }} end as conform_seq,
            {{ conformed_through() }} as conformed_through
        from (
            select
                *,
                was_known and (
                    (not is_current and not was_current)
                    or (is_current and was_current and computed_fingerprint = previous_fingerprint)
                ) as unchanged
            from compared
        ) as compared
        left join computed on compared._ndc_key = computed._ndc_key
        left join {{ this }} as previous on compared._ndc_key = previous._ndc_key
        where compared.is_current or compared.was_known
    {%- else %}
        select
            *,
            true as is_current,
            null::text as previous_citizen_id,
            null::text as published_citizen_id,
            false as _ndc_removed,
            {{ conform_seq() }} as conform_seq,
            {{ conformed_through() }} as conformed_through
        from computed
    {%- endif %}
)

select * from final
