{#- Per enterprise code: status events, open branches, tax compliance (filings, declared, paid, arrears) and
    insured employees, from the enterprise registry, the tax authority and social insurance. -#}
with

status_events as (
    select
        enterprise_code,
        count(*) as status_events,
        max(effective_on) as last_status_change_on,
        min(effective_on) filter (where status = 'dissolved') as dissolved_on
    from {{ ref('stg_enterprise__status_events') }}
    group by enterprise_code
),

branches as (
    select
        enterprise_code,
        count(*) as open_branches
    from {{ ref('stg_enterprise__branches') }}
    group by enterprise_code
),

filings as (
    select
        taxpayer_id as enterprise_code,
        count(*) as tax_filings,
        max(filed_on) as last_tax_filed_on,
        sum(declared_amount_vnd) as tax_declared_vnd
    from {{ ref('stg_taxation__tax_filings') }}
    group by taxpayer_id
),

payments as (
    select
        taxpayer_id as enterprise_code,
        sum(amount_vnd) as tax_paid_vnd
    from {{ ref('stg_taxation__tax_payments') }}
    group by taxpayer_id
),

employees as (
    select
        enterprise_code,
        count(*) as insured_employees
    from {{ ref('stg_insurance__insured_persons') }}
    where enterprise_code is not null
    group by enterprise_code
),

final as (
    select
        enterprises.enterprise_code,
        status_events.last_status_change_on,
        status_events.dissolved_on,
        filings.last_tax_filed_on,
        coalesce(status_events.status_events, 0) as status_events,
        coalesce(branches.open_branches, 0) as open_branches,
        coalesce(filings.tax_filings, 0) as tax_filings,
        coalesce(filings.tax_declared_vnd, 0) as tax_declared_vnd,
        coalesce(payments.tax_paid_vnd, 0) as tax_paid_vnd,
        greatest(coalesce(filings.tax_declared_vnd, 0) - coalesce(payments.tax_paid_vnd, 0), 0) as tax_arrears_vnd,
        coalesce(employees.insured_employees, 0) as insured_employees
    from {{ ref('stg_enterprise__enterprises') }} as enterprises
    left join status_events on enterprises.enterprise_code = status_events.enterprise_code
    left join branches on enterprises.enterprise_code = branches.enterprise_code
    left join filings on enterprises.enterprise_code = filings.enterprise_code
    left join payments on enterprises.enterprise_code = payments.enterprise_code
    left join employees on enterprises.enterprise_code = employees.enterprise_code
)

select * from final
