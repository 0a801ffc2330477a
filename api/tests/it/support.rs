//! Shared helpers: an in-process server on 127.0.0.1 with OS-assigned ports, SQL over HTTP.

use std::path::Path;

use api::{RunningServer, ServerConfig};
use serde_json::Value;

pub(crate) struct TestServer {
    pub(crate) server: Option<RunningServer>,
    pub(crate) api: String,
    pub(crate) otlp_http: String,
    pub(crate) otlp_grpc: String,
    /// `http://` address of the Jaeger remote-storage gRPC server.
    pub(crate) jaeger: String,
    /// The client [`TestServer::sql`] uses.
    pub(crate) client: reqwest::Client,
}

impl TestServer {
    pub(crate) async fn start(dir: &Path) -> TestServer {
        Self::start_with(ServerConfig::ephemeral(dir)).await
    }

    /// Starts a server; with TLS configured, its addresses are `https://`, and `client`
    /// must trust its certificate.
    pub(crate) async fn start_with(config: ServerConfig) -> TestServer {
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let server = api::start(config).await.expect("server starts");
        TestServer {
            api: format!("{scheme}://{}", server.api_addr),
            otlp_http: format!("{scheme}://{}", server.otlp_http_addr),
            otlp_grpc: format!("{scheme}://{}", server.otlp_grpc_addr),
            jaeger: format!("{scheme}://{}", server.jaeger_addr),
            server: Some(server),
            client: reqwest::Client::new(),
        }
    }

    pub(crate) async fn sql(&self, sql: &str) -> Value {
        let response = self
            .client
            .post(format!("{}/api/v1/sql", self.api))
            .json(&serde_json::json!({ "sql": sql, "format": "json" }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{sql}: {status} {body}");
        body
    }

    /// The rows of a query, as JSON arrays.
    pub(crate) async fn rows(&self, sql: &str) -> Vec<Value> {
        self.sql(sql).await["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) async fn count(&self, sql: &str) -> i64 {
        let rows = self.rows(sql).await;
        rows[0][0]
            .as_i64()
            .unwrap_or_else(|| panic!("{sql}: {rows:?}"))
    }

    pub(crate) async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}
