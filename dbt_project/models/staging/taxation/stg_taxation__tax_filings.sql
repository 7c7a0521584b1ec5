with

source as (
    select * from {{ source('taxation', 'filings') }}
),

not_deleted as (
    select * from source
    where _ndc_deleted_at is null
),

renamed as (
    select
        filing_id as tax_filing_id,
        taxpayer_id,
        tax_period,
        form_code,
        filed_on,
        declared_amount::numeric(18, 0) as declared_amount_vnd,
        updated_at as source_updated_at,
        _ndc_loaded_at as loaded_at
    from not_deleted
)

select * from renamed
