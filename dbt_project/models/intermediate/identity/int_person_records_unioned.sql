{#- Every record of a person held outside the population database, in one shape: the PIN as recorded (if any),
    the legacy identifier it carries, and the full name and birth date the authorities match on. Ephemeral:
    identity resolution reads only the records it re-resolves, and the filter reaches each source. -#}
{{ config(materialized='ephemeral') }}
with

taxpayers as (
    select * from {{ ref('stg_taxation__taxpayers') }}
),

insured_persons as (
    select * from {{ ref('stg_insurance__insured_persons') }}
),

students as (
    select * from {{ ref('stg_education__students') }}
),

legal_representatives as (
    select * from {{ ref('stg_enterprise__legal_representatives') }}
),

taxpayer_records as (
    select
        'taxation' as source_name,
        'taxpayers' as dataset,
        taxpayer_id as record_key,
        coalesce(citizen_id, case when length(taxpayer_id) = 12 then taxpayer_id end) as recorded_citizen_id,
        'legacy_tax_code' as legacy_identifier_kind,
        legacy_tax_code as legacy_identifier,
        taxpayer_name as full_name,
        birth_date,
        loaded_at
    from taxpayers
    where taxpayer_kind = 'individual'
),

insured_person_records as (
    select
        'insurance' as source_name,
        'insured_people' as dataset,
        insurance_code as record_key,
        citizen_id as recorded_citizen_id,
        'insurance_code' as legacy_identifier_kind,
        insurance_code as legacy_identifier,
        full_name,
        birth_date,
        loaded_at
    from insured_persons
),

student_records as (
    select
        'education' as source_name,
        'students' as dataset,
        student_id as record_key,
        citizen_id as recorded_citizen_id,
        'student_id' as legacy_identifier_kind,
        student_id as legacy_identifier,
        full_name,
        birth_date,
        loaded_at
    from students
),

representative_records as (
    select
        'enterprise' as source_name,
        'legal_representatives' as dataset,
        legal_representative_id as record_key,
        recorded_citizen_id,
        null as legacy_identifier_kind,
        null as legacy_identifier,
        full_name,
        birth_date,
        loaded_at
    from legal_representatives
),

final as (
    select * from taxpayer_records
    union all
    select * from insured_person_records
    union all
    select * from student_records
    union all
    select * from representative_records
)

select * from final
