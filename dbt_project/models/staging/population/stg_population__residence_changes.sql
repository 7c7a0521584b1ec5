with

source as (
    select * from {{ source('population', 'residence_changes') }}
),

not_deleted as (
    select * from source
    where _ndc_deleted_at is null
),

renamed as (
    select
        change_id as residence_change_id,
        pin as citizen_id,
        from_province_code,
        to_province_code,
        moved_on,
        updated_at as source_updated_at,
        _ndc_loaded_at as loaded_at
    from not_deleted
)

select * from renamed
