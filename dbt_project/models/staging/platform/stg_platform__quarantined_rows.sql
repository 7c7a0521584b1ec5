with

source as (
    select * from {{ source('platform', 'rows') }}
),

renamed as (
    select
        quarantine_id,
        checks as failed_checks,
        quarantined_at,
        split_part(dataset, '.', 1) as source_name,
        split_part(dataset, '.', 2) as dataset
    from source
)

select * from renamed
