//! An axum app served on a free loopback port for as long as its handle lives: how the
//! stand-ins at the HTTP boundary (STS, the Kubernetes API) run inside a test process.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// A running server; dropping it stops it.
pub struct LoopbackServer {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl LoopbackServer {
    /// Serves `app` on `127.0.0.1:<free port>`; `name` names it if it fails.
    pub async fn start(app: axum::Router, name: &'static str) -> LoopbackServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        });
        LoopbackServer { address, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
