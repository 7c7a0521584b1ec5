with

enterprises as (
    select
        *,
        {{ vietnam_date('source_updated_at') }} as recorded_on
    from {{ ref('stg_enterprise__enterprises') }}
),

activity as (
    select * from {{ ref('int_enterprise_activity') }}
),

provinces as (
    select * from {{ ref('int_provinces_effective_dated') }}
),

mapping as (
    select * from {{ ref('province_mapping') }}
),

final as (
    select
        enterprises.enterprise_code,
        enterprises.enterprise_name,
        enterprises.legal_form,
        enterprises.registered_on,
        enterprises.status,
        activity.status_events,
        activity.last_status_change_on,
        activity.dissolved_on,
        activity.open_branches,
        enterprises.province_code as historic_province_code,
        provinces.province_name as historic_province_name,
        mapping.new_code as current_province_code,
        mapping.new_name as current_province_name,
        activity.tax_filings,
        activity.last_tax_filed_on,
        activity.tax_declared_vnd,
        activity.tax_paid_vnd,
        activity.tax_arrears_vnd,
        activity.insured_employees,
        enterprises.source_updated_at
    from enterprises
    inner join activity on enterprises.enterprise_code = activity.enterprise_code
    left join provinces
        on
            enterprises.province_code = provinces.province_code
            and enterprises.recorded_on between provinces.valid_from and provinces.valid_to
    left join mapping on enterprises.province_code = mapping.old_code
)

select * from final
