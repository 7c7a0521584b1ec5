{#- The records whose shared identity_exceptions rows may differ from the published ones: re-resolved or
    re-checked for a reference since identity_exceptions was last published. A delta run builds the exceptions of
    these records only and replaces theirs in the published table. Empty in a full run. -#}
with

resolved as (
    select * from {{ ref('int_identities_resolved') }}
),

references_checked as (
    select * from {{ ref('int_references_unresolved') }}
),

changed as (
    select
        resolved.source_name,
        resolved.dataset,
        resolved.record_key
    from resolved
    where resolved.conform_seq > {{ published_seq('identity_exceptions') }}
    union
    select
        references_checked.source_name,
        references_checked.dataset,
        references_checked.record_key
    from references_checked
    where references_checked.conform_seq > {{ published_seq('identity_exceptions') }}
),

final as (
    select distinct
        changed.source_name,
        changed.dataset,
        changed.record_key
    from changed
    where {{ is_delta() }}
)

select * from final
