//! The HTTP client of the CLI's `--url` commands: a running server's API, over http or https.
//!
//! The server's certificate is checked against the system's roots plus, when
//! `SIGHTLINE_CA_CERT` names a PEM file, the certificates in it (a private CA or a self-signed
//! server). The token comes from `SIGHTLINE_TOKEN`, never a flag: a command line shows in `ps`.

use anyhow::Context;

/// Environment variable naming extra trusted CA certificates (PEM).
pub const CA_CERT_ENV: &str = "SIGHTLINE_CA_CERT";

/// Environment variable holding the API token.
pub const TOKEN_ENV: &str = "SIGHTLINE_TOKEN";

/// A client trusting the system's roots and `SIGHTLINE_CA_CERT`.
pub fn client() -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = std::env::var_os(CA_CERT_ENV).filter(|path| !path.is_empty()) {
        let pem = std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {CA_CERT_ENV}={}",
                std::path::Path::new(&path).display()
            )
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
            format!(
                "{CA_CERT_ENV}={} holds no usable PEM certificate",
                std::path::Path::new(&path).display()
            )
        })?;
        anyhow::ensure!(
            !certs.is_empty(),
            "{CA_CERT_ENV}={} holds no PEM certificate",
            std::path::Path::new(&path).display()
        );
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().context("cannot set up the HTTP client")
}

/// The API token from `SIGHTLINE_TOKEN` (trimmed; empty means none).
pub fn token() -> Option<String> {
    std::env::var(TOKEN_ENV)
        .ok()
        .map(|token| token.trim().to_owned())
        .filter(|token| !token.is_empty())
}

/// POSTs `body` as JSON to `endpoint` with the token, if any; an unreachable server is an
/// error saying why (see [`unreachable()`]).
pub async fn post_json(
    client: &reqwest::Client,
    endpoint: &str,
    body: &impl serde::Serialize,
    token: Option<&str>,
) -> anyhow::Result<reqwest::Response> {
    let mut request = client.post(endpoint).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .map_err(|error| unreachable(endpoint, &error))
}

/// Why `endpoint` could not be reached, with a hint when plain HTTP met a TLS server.
pub fn unreachable(endpoint: &str, error: &reqwest::Error) -> anyhow::Error {
    let chain = engine::cause_chain(error);
    let hint = if endpoint.starts_with("http://")
        && (chain.contains("invalid HTTP version") || chain.contains("connection closed"))
    {
        " (does the server serve TLS? then use https:// and trust its CA with SIGHTLINE_CA_CERT)"
    } else {
        ""
    };
    anyhow::anyhow!("cannot reach {endpoint}: {chain}{hint}")
}
