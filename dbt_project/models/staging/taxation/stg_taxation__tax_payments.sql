with

source as (
    select * from {{ source('taxation', 'payments') }}
),

not_deleted as (
    select * from source
    where _ndc_deleted_at is null
),

renamed as (
    select
        payment_id as tax_payment_id,
        taxpayer_id,
        paid_on,
        amount::numeric(18, 0) as amount_vnd,
        updated_at as source_updated_at,
        _ndc_loaded_at as loaded_at
    from not_deleted
)

select * from renamed
