with

enterprises as (
    select * from {{ ref('stg_enterprise__enterprises') }}
),

activity as (
    select * from {{ ref('int_activities_aggregated_to_enterprises') }}
),

provinces as (
    select * from {{ ref('int_provinces_effective_dated') }}
),

mapping as (
    select * from {{ ref('province_mapping') }}
),

dated as (
    select
        *,
        {{ vietnam_date('source_updated_at') }} as recorded_on
    from enterprises
),

final as (
    select
        dated.enterprise_code,
        dated.enterprise_name,
        dated.legal_form,
        dated.registered_on,
        dated.status,
        activity.status_events,
        activity.last_status_change_on,
        activity.dissolved_on,
        activity.open_branches,
        dated.province_code as historic_province_code,
        provinces.province_name as historic_province_name,
        mapping.new_code as current_province_code,
        mapping.new_name as current_province_name,
        activity.tax_filings,
        activity.last_tax_filed_on,
        activity.tax_declared_vnd,
        activity.tax_paid_vnd,
        activity.tax_arrears_vnd,
        activity.insured_employees,
        dated.source_updated_at
    from dated
    inner join activity on dated.enterprise_code = activity.enterprise_code
    left join provinces
        on
            dated.province_code = provinces.province_code
            and dated.recorded_on between provinces.valid_from and provinces.valid_to
    left join mapping on dated.province_code = mapping.old_code
)

select * from final
