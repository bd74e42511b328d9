//! Background load for fault tests: workers that create sandbox environments and delete some of
//! them (often mid-step), and shrug off every error, since the API may be down at any moment.

use crate::sandbox_yaml;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Running workers; [`Traffic::stop`] ends them.
pub struct Traffic {
    stop: CancellationToken,
    workers: JoinSet<()>,
    accepted: Arc<AtomicUsize>,
}

impl Traffic {
    /// Starts `workers` loops against the API at `base_url`. Every third environment a worker
    /// creates is deleted right after its creation was accepted.
    pub fn start(base_url: &str, token: &str, workers: usize) -> Self {
        let stop = CancellationToken::new();
        let accepted = Arc::new(AtomicUsize::new(0));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        let mut set = JoinSet::new();
        for worker in 0..workers {
            let (http, stop, accepted) = (http.clone(), stop.clone(), Arc::clone(&accepted));
            let (base_url, token) = (base_url.to_owned(), token.to_owned());
            set.spawn(async move {
                let mut n = 0u32;
                while !stop.is_cancelled() {
                    n += 1;
                    let yaml =
                        sandbox_yaml(&format!("load-{worker}-{n}"), "    apply_seconds: 0.1\n");
                    let created = http
                        .post(format!("{base_url}/v1/environments"))
                        .bearer_auth(&token)
                        .header("content-type", "application/yaml")
                        .body(yaml)
                        .send()
                        .await;
                    let id = match created {
                        Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            response
                                .json::<serde_json::Value>()
                                .await
                                .ok()
                                .and_then(|body| body["id"].as_str().map(str::to_owned))
                        }
                        // Down, restarting, or refusing: try again shortly.
                        _ => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            None
                        }
                    };
                    if let Some(id) = id
                        && n.is_multiple_of(3)
                    {
                        let _ = http
                            .delete(format!("{base_url}/v1/environments/{id}"))
                            .bearer_auth(&token)
                            .send()
                            .await;
                    }
                }
            });
        }
        Self {
            stop,
            workers: set,
            accepted,
        }
    }

    /// How many creates the API accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Stops the workers and waits for them; returns how many creates were accepted.
    pub async fn stop(mut self) -> usize {
        self.stop.cancel();
        while self.workers.join_next().await.is_some() {}
        self.accepted()
    }
}
