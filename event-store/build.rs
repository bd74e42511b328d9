//! `sqlx::migrate!` embeds `migrations/` at compile time; without this, a migration added to a
//! built tree is missing from the binary until something else rebuilds the crate (what sqlx's
//! `sqlx migrate build-script` generates).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
