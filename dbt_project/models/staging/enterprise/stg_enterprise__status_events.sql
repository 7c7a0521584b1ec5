with

source as (
    select * from {{ source('enterprise', 'status_history') }}
),

not_deleted as (
    select * from source
    where _ndc_deleted_at is null
),

renamed as (
    select
        event_id as status_event_id,
        enterprise_code,
        status,
        effective_on,
        updated_at as source_updated_at,
        _ndc_loaded_at as loaded_at
    from not_deleted
)

select * from renamed
