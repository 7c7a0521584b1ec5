{#- Every record the conformance layer could not link, with the reason: person records without a certain PIN
    (identity) and records whose reference to another record resolves to nothing (reference). Never dropped.
    A delta run (docs/conform-publish.md) builds the exceptions of the changed records only. -#}
-- depends_on: {{ ref('int_identity_exceptions_changed') }}
with

resolved as (
    select * from {{ ref('int_identities_resolved') }}
),

unresolved_references as (
    select * from {{ ref('int_references_unresolved') }}
    where is_current
),

identity as (
    select
        source_name,
        dataset,
        record_key,
        'identity' as exception_kind,
        exception_reason,
        coalesce(legacy_identifier_kind, 'pin') as identifier_kind,
        name_birth_candidates as candidate_citizens,
        loaded_at
    from resolved
    where exception_reason is not null
),

reference as (
    select
        source_name,
        dataset,
        record_key,
        'reference' as exception_kind,
        exception_reason,
        reference_column as identifier_kind,
        0 as candidate_citizens,
        loaded_at
    from unresolved_references
),

exceptions as (
    select * from identity
    union all
    select * from reference
),

final as (
    select * from exceptions
    {%- if is_delta() %}
        where (source_name, dataset, record_key) in (
            select
                changed.source_name,
                changed.dataset,
                changed.record_key
            from {{ ref('int_identity_exceptions_changed') }} as changed
        )
    {%- endif %}
)

select * from final
