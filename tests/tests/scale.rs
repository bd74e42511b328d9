//! Many environments at once.

use std::time::Duration;
use system_tests::{Stack, sandbox_yaml};

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_creates_all_reach_ready() {
    let stack = Stack::start().await;
    let creates = (0..20).map(|n| {
        let yaml = sandbox_yaml(&format!("fleet-{n:02}"), "    apply_seconds: 0.1\n");
        let stack = &stack;
        async move { stack.create_ok(&yaml).await }
    });
    let ids = futures::future::join_all(creates).await;
    for id in &ids {
        stack
            .wait_for_status(id, "ready", Duration::from_secs(120))
            .await;
    }
    for id in &ids {
        let types = stack.history_types(id).await;
        assert_eq!(types.iter().filter(|t| *t == "InfraApplied").count(), 1);
    }
}
