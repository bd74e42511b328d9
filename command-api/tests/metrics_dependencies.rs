//! `provisioner_dependency_up`: the API's sampler says whether PostgreSQL and NATS answered its
//! last round, so "database unreachable" alerts on the provisioner's own metric. In its own test
//! binary: the gauge is process-wide, and this test makes it go down.

use command_api::metrics::sampler::Sampler;
use domain::aggregate::StepTimeouts;
use domain::wire::Subjects;
use std::time::Duration;
use system_tests::services::{self, TestDb};

fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

const POSTGRES_UP: &str = r#"provisioner_dependency_up{dependency="postgres"}"#;
const NATS_UP: &str = r#"provisioner_dependency_up{dependency="nats"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_sampler_reports_whether_postgres_and_nats_answered() {
    let handle = system_tests::metrics_handle();
    command_api::metrics::describe();
    let nats = services::nats().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let subjects = Subjects::new(format!("dep{}", rand::random::<u32>()));
    command_api::jetstream::ensure_streams(&js, &subjects, 1)
        .await
        .unwrap();
    let sampler = |pool| {
        Sampler::new(
            pool,
            js.clone(),
            subjects.clone(),
            StepTimeouts::DEFAULT,
            Duration::from_secs(60),
        )
    };

    let db = TestDb::new("dependency_up").await;
    sampler(db.pool.clone()).sample().await;
    let text = handle.render();
    assert_eq!(value(&text, POSTGRES_UP), Some(1.0), "{text}");
    assert_eq!(value(&text, NATS_UP), Some(1.0), "{text}");

    // A database nothing listens for: every query fails at once.
    let unreachable = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    sampler(unreachable).sample().await;
    let text = handle.render();
    assert_eq!(value(&text, POSTGRES_UP), Some(0.0), "{text}");
    assert_eq!(value(&text, NATS_UP), Some(1.0), "{text}");
}
