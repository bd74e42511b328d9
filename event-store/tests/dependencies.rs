//! The event store's place in the map: it depends on `domain` and the database, and on nothing
//! that serves HTTP, talks to NATS or runs steps.

/// The crates named in `manifest`'s `[dependencies]` table.
fn dependencies(manifest: &str) -> Vec<&str> {
    manifest
        .split("\n[dependencies]\n")
        .nth(1)
        .expect("a [dependencies] table")
        .split("\n[")
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(['.', ' ', '=']).next())
        .filter(|name| !name.is_empty() && !name.starts_with('#'))
        .collect()
}

#[test]
fn the_event_store_depends_on_the_domain_and_the_database_only() {
    let ours = dependencies(include_str!("../Cargo.toml"));
    assert!(ours.contains(&"domain"), "{ours:?}");
    assert!(ours.contains(&"sqlx"), "{ours:?}");
    for forbidden in [
        "command-api",
        "projections",
        "executors",
        "async-nats",
        "axum",
        "hyper",
    ] {
        assert!(
            !ours.contains(&forbidden),
            "event-store depends on {forbidden}"
        );
    }
}

#[test]
fn projections_read_events_through_the_event_store_not_the_command_side() {
    let manifest = include_str!("../../projections/Cargo.toml");
    let normal = dependencies(manifest);
    assert!(normal.contains(&"event-store"), "{normal:?}");
    assert!(
        !manifest.contains("command-api"),
        "projections must not depend on command-api, not even for its tests"
    );
}
