{#- Every record the conformance layer could not link, with the reason: person records without a certain PIN
    (identity) and records whose reference to another record resolves to nothing (reference). Never dropped. -#}
with

resolved as (
    select * from {{ ref('int_identities_resolved') }}
),

unresolved_references as (
    select * from {{ ref('int_references_unresolved') }}
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

final as (
    select * from identity
    union all
    select * from reference
)

select * from final
