//! Shared helpers: an in-process server on 127.0.0.1 with OS-assigned ports, SQL over HTTP.

use std::path::Path;
use std::sync::Arc;

use api::auth::{Scope, TokenSection, Tokens, token_hash};
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

/// Tokens from `(name, token text, scopes)` entries, as a configuration file lists them.
pub(crate) fn tokens(entries: &[(&str, &str, &[Scope])]) -> Arc<Tokens> {
    let sections: Vec<TokenSection> = entries
        .iter()
        .map(|(name, token, scopes)| TokenSection {
            name: (*name).to_owned(),
            sha256: token_hash(token),
            scopes: scopes.to_vec(),
        })
        .collect();
    Arc::new(Tokens::from_sections(&sections).unwrap())
}

/// A client sending `Authorization: Bearer <token>` with every request.
pub(crate) fn client_with_token(token: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap()
}
