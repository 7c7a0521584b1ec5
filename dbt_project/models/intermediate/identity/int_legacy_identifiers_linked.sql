{#- Legacy identifiers linked to the PIN: the 9-digit CMND (from the population database itself), the legacy
    10-digit personal tax code, the 10-digit social insurance code and the student id (from resolved records). -#}
with

citizens as (
    select * from {{ ref('stg_population__citizens') }}
),

resolved as (
    select * from {{ ref('int_identities_resolved') }}
),

id_cards as (
    -- a CMND recorded for two citizens links neither (legacy numbers were reissued and mistyped)
    select
        'cmnd' as identifier_kind,
        legacy_id_card_number as identifier,
        min(citizen_id) as citizen_id,
        'population' as source_name,
        'recorded' as match_method
    from citizens
    where legacy_id_card_number is not null
    group by legacy_id_card_number
    having count(*) = 1
),

resolved_identifiers as (
    select
        legacy_identifier_kind as identifier_kind,
        legacy_identifier as identifier,
        citizen_id,
        source_name,
        match_method
    from resolved
    where citizen_id is not null and legacy_identifier is not null
),

final as (
    select * from id_cards
    union all
    select * from resolved_identifiers
)

select * from final
