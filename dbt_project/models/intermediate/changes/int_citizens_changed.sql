{#- The citizens whose shared row may differ from the published one: rewritten in their residence or activity
    since `citizens` was last published, or loaded, deleted or restored at the source since then. A delta run
    builds `citizens` for these keys only and replaces them in the published table (a key it no longer builds is
    removed). Empty in a full run. -#}
with

located as (
    select * from {{ ref('int_citizens_located') }}
),

activity as (
    select * from {{ ref('int_activities_aggregated_to_citizens') }}
),

landed as (
    select * from {{ source('population', 'citizens') }}
),

changed as (
    select located.citizen_id from located
    where located.conform_seq > {{ published_seq('citizens') }}
    union
    select activity.citizen_id from activity
    where activity.conform_seq > {{ published_seq('citizens') }}
    union
    select landed.pin as citizen_id from landed
    where landed._ndc_loaded_at >= {{ published_horizon('citizens') }}
),

final as (
    select distinct changed.citizen_id from changed
    where {{ is_delta() }}
)

select * from final
