{#- Per source and dataset: rows current in landing, rows deleted at the source, rows quarantined at the extract,
    conformance exceptions (identity and reference) and when it last loaded. -#}
{%- set datasets = [
    ('population', 'citizens'), ('population', 'households'), ('population', 'residence_changes'),
    ('taxation', 'taxpayers'), ('taxation', 'filings'), ('taxation', 'payments'),
    ('insurance', 'insured_people'), ('insurance', 'employers'), ('insurance', 'contributions'),
    ('enterprise', 'enterprises'), ('enterprise', 'branches'), ('enterprise', 'legal_representatives'),
    ('enterprise', 'status_history'),
    ('education', 'schools'), ('education', 'students'), ('education', 'enrolments'),
] -%}

with

{% for source_name, dataset in datasets %}
    {{ source_name }}__{{ dataset }} as (
        select * from {{ source(source_name, dataset) }}
    ),
{% endfor %}

quarantined_rows as (
    select * from {{ ref('stg_platform__quarantined_rows') }}
),

resolved as (
    select * from {{ ref('int_identities_resolved') }}
),

unresolved_references as (
    select * from {{ ref('int_references_unresolved') }}
),

-- what shared.identity_exceptions lists, counted from its inputs (a delta run builds that model for the changed
-- records only)
exception_records as (
    select
        source_name,
        dataset,
        'identity' as exception_kind
    from resolved
    where exception_reason is not null
    union all
    select
        source_name,
        dataset,
        'reference' as exception_kind
    from unresolved_references
    where is_current
),

landed as (
    {%- for source_name, dataset in datasets %}
        select
            '{{ source_name }}' as source_name,
            '{{ dataset }}' as dataset,
            count(*) filter (where _ndc_deleted_at is null) as current_rows,
            count(*) filter (where _ndc_deleted_at is not null) as deleted_rows,
            max(_ndc_loaded_at) as last_loaded_at
        from {{ source_name }}__{{ dataset }}
        {% if not loop.last %}union all{% endif %}
    {%- endfor %}
),

quarantined as (
    select
        source_name,
        dataset,
        count(*) as quarantined_rows
    from quarantined_rows
    group by source_name, dataset
),

exceptions as (
    select
        source_name,
        dataset,
        count(*) filter (where exception_kind = 'identity') as identity_exceptions,
        count(*) filter (where exception_kind = 'reference') as reference_exceptions
    from exception_records
    group by source_name, dataset
),

linked as (
    select
        source_name,
        dataset,
        count(*) filter (where citizen_id is not null) as linked_records
    from resolved
    group by source_name, dataset
),

final as (
    select
        landed.source_name,
        landed.dataset,
        landed.current_rows,
        landed.deleted_rows,
        coalesce(quarantined.quarantined_rows, 0) as quarantined_rows,
        coalesce(exceptions.identity_exceptions, 0) as identity_exceptions,
        coalesce(exceptions.reference_exceptions, 0) as reference_exceptions,
        linked.linked_records,
        landed.last_loaded_at
    from landed
    left join quarantined on landed.source_name = quarantined.source_name and landed.dataset = quarantined.dataset
    left join exceptions on landed.source_name = exceptions.source_name and landed.dataset = exceptions.dataset
    left join linked on landed.source_name = linked.source_name and landed.dataset = linked.dataset
)

select * from final
