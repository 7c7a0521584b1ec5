{#- Per enterprise code: status events, open branches, tax compliance (filings, declared, paid, arrears) and
    insured employees, from the enterprise registry, the tax authority and social insurance. -#}
with

enterprises as (
    select * from {{ ref('stg_enterprise__enterprises') }}
),

status_events as (
    select * from {{ ref('stg_enterprise__status_events') }}
),

branches as (
    select * from {{ ref('stg_enterprise__branches') }}
),

tax_filings as (
    select * from {{ ref('stg_taxation__tax_filings') }}
),

tax_payments as (
    select * from {{ ref('stg_taxation__tax_payments') }}
),

insured_persons as (
    select * from {{ ref('stg_insurance__insured_persons') }}
),

status_histories as (
    select
        enterprise_code,
        count(*) as status_events,
        max(effective_on) as last_status_change_on,
        min(effective_on) filter (where status = 'dissolved') as dissolved_on
    from status_events
    group by enterprise_code
),

open_branches as (
    select
        enterprise_code,
        count(*) as open_branches
    from branches
    group by enterprise_code
),

filings as (
    select
        taxpayer_id as enterprise_code,
        count(*) as tax_filings,
        max(filed_on) as last_tax_filed_on,
        sum(declared_amount_vnd) as tax_declared_vnd
    from tax_filings
    group by taxpayer_id
),

payments as (
    select
        taxpayer_id as enterprise_code,
        sum(amount_vnd) as tax_paid_vnd
    from tax_payments
    group by taxpayer_id
),

employees as (
    select
        enterprise_code,
        count(*) as insured_employees
    from insured_persons
    where enterprise_code is not null
    group by enterprise_code
),

final as (
    select
        enterprises.enterprise_code,
        status_histories.last_status_change_on,
        status_histories.dissolved_on,
        filings.last_tax_filed_on,
        coalesce(status_histories.status_events, 0) as status_events,
        coalesce(open_branches.open_branches, 0) as open_branches,
        coalesce(filings.tax_filings, 0) as tax_filings,
        coalesce(filings.tax_declared_vnd, 0) as tax_declared_vnd,
        coalesce(payments.tax_paid_vnd, 0) as tax_paid_vnd,
        greatest(coalesce(filings.tax_declared_vnd, 0) - coalesce(payments.tax_paid_vnd, 0), 0) as tax_arrears_vnd,
        coalesce(employees.insured_employees, 0) as insured_employees
    from enterprises
    left join status_histories on enterprises.enterprise_code = status_histories.enterprise_code
    left join open_branches on enterprises.enterprise_code = open_branches.enterprise_code
    left join filings on enterprises.enterprise_code = filings.enterprise_code
    left join payments on enterprises.enterprise_code = payments.enterprise_code
    left join employees on enterprises.enterprise_code = employees.enterprise_code
)

select * from final
