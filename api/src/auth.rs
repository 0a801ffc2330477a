//! Bearer tokens with scopes, checked on every listener, and the HTTP listeners' Host and
//! Origin checks.
//!
//! Tokens are defined in the configuration file (`[[auth.tokens]]`) by the SHA-256 of their
//! text, never the text itself; `sightline token` makes one. Scopes:
//! - `ingest`: OTLP exports (gRPC and HTTP, and the OTLP service on the Jaeger address);
//! - `query`: SQL, traces and Jaeger reads, with content as references only;
//! - `content`: with `query`, prompt and completion text (the `content` table,
//!   `?content=true`);
//! - `admin`: state-changing calls (`POST /purge`).
//!
//! Invariants:
//! - with tokens configured, every request except `GET /healthz` carries
//!   `Authorization: Bearer <token>` of a token holding the scope its route needs: 401 /
//!   UNAUTHENTICATED without a known token, 403 / PERMISSION_DENIED without the scope;
//! - with no tokens configured, every request is allowed: the server then listens on loopback
//!   only (checked at startup, `server::check_exposure`);
//! - an HTTP request whose Host is not a name of this server, or whose Origin is another site,
//!   gets 403 whatever its token: a DNS-rebinding page or a cross-site form cannot reach the
//!   API.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::codegen::BoxFuture;
use tonic::codegen::http;

use crate::edge_error::EdgeError;

/// What a token may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send OTLP exports.
    Ingest,
    /// Read spans and run SQL (content as references).
    Query,
    /// Read prompt and completion text.
    Content,
    /// Change state: purge, maintenance.
    Admin,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
            Scope::Content => "content",
            Scope::Admin => "admin",
        })
    }
}

/// `[[auth.tokens]]` of the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    /// Who holds it (logged, never secret).
    pub name: String,
    /// SHA-256 of the token's text, 64 hex digits.
    pub sha256: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// What one request may do: the scopes of its token (all of them when no tokens are
/// configured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's name (`local` without tokens).
    pub name: String,
    scopes: BTreeSet<Scope>,
}

impl Grant {
    /// Whether the grant holds `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// 403 unless the grant holds `scope`.
    pub fn require(&self, scope: Scope, what: &str) -> Result<(), EdgeError> {
        if self.allows(scope) {
            Ok(())
        } else {
            Err(EdgeError::Forbidden(format!(
                "{what} needs a token with the {scope} scope; token {:?} has {}",
                self.name,
                self.scope_list()
            )))
        }
    }

    fn scope_list(&self) -> String {
        let names: Vec<String> = self.scopes.iter().map(ToString::to_string).collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }
}

/// The configured tokens, by the hash of their text.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Grant>,
}

impl Tokens {
    /// Tokens from the configuration file's sections; fails naming a malformed hash.
    pub fn from_sections(sections: &[TokenSection]) -> Result<Self, String> {
        let mut by_hash = HashMap::new();
        for section in sections {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(section.sha256.trim(), &mut hash).map_err(|error| {
                format!(
                    "token {:?}: sha256 must be 64 hex digits (the SHA-256 of the token): {error}",
                    section.name
                )
            })?;
            let scopes: BTreeSet<Scope> = section.scopes.iter().copied().collect();
            if scopes.is_empty() {
                return Err(format!(
                    "token {:?} has no scopes: give at least one of ingest, query, content, admin",
                    section.name
                ));
            }
            if scopes.contains(&Scope::Content) && !scopes.contains(&Scope::Query) {
                return Err(format!(
                    "token {:?} has the content scope without query: content only widens what \
                     a query may read, so add \"query\"",
                    section.name
                ));
            }
            let grant = Grant {
                name: section.name.clone(),
                scopes,
            };
            if by_hash.insert(hash, grant).is_some() {
                return Err(format!("token {:?} is listed twice", section.name));
            }
        }
        Ok(Tokens { by_hash })
    }

    /// One line per token for `check-config`: name and scopes (never the hash).
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "no API tokens: every request allowed, listeners on loopback only\n".to_owned();
        }
        let mut grants: Vec<&Grant> = self.by_hash.values().collect();
        grants.sort_by(|a, b| a.name.cmp(&b.name));
        grants
            .iter()
            .map(|grant| format!("token {:?}: {}\n", grant.name, grant.scope_list()))
            .collect()
    }

    /// True when no token is configured (everything allowed, loopback only).
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The grant of the `Authorization` header value `header` (every scope without tokens);
    /// 401 when the header is missing or names no configured token.
    pub fn grant(&self, header: Option<&str>) -> Result<Grant, EdgeError> {
        if self.is_empty() {
            return Ok(Grant {
                name: "local".to_owned(),
                scopes: [Scope::Ingest, Scope::Query, Scope::Content, Scope::Admin]
                    .into_iter()
                    .collect(),
            });
        }
        let Some(value) = header else {
            return Err(EdgeError::Unauthenticated(
                "this server requires a token: send Authorization: Bearer <token>".to_owned(),
            ));
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| {
                EdgeError::Unauthenticated(
                    "the Authorization header must be Bearer <token>".to_owned(),
                )
            })?
            .trim();
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash
            .get(&hash)
            .cloned()
            .ok_or_else(|| EdgeError::Unauthenticated("unknown token".to_owned()))
    }
}

/// The SHA-256 (hex) a configuration lists for `token`.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// `sightline token`: a new token and its configuration entry.
pub fn token_command(
    args: &crate::cli::TokenArgs,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let token = new_token()?;
    let scopes: Vec<String> = args
        .scopes
        .iter()
        .map(|scope| format!("{scope:?}", scope = scope.to_string()))
        .collect();
    writeln!(
        out,
        "token (give it to the client; it is not stored anywhere):\n  {token}\n"
    )?;
    writeln!(
        out,
        "configuration entry (add it to the file given with --config):"
    )?;
    writeln!(out, "[[auth.tokens]]")?;
    writeln!(out, "name = {:?}", args.name)?;
    writeln!(out, "sha256 = \"{}\"", token_hash(&token))?;
    writeln!(out, "scopes = [{}]", scopes.join(", "))?;
    Ok(())
}

/// A new random token (32 bytes from the OS, hex).
pub fn new_token() -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!("sl_{}", hex::encode(bytes)))
}

/// What the HTTP listeners check beyond tokens.
#[derive(Debug, Clone, Default)]
pub struct HttpGuard {
    /// The tokens.
    pub tokens: Arc<Tokens>,
    /// Host names (without port) accepted besides loopback names and the bound address.
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) accepted besides the server's own.
    pub allowed_origins: Vec<String>,
    /// Where refusals are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl HttpGuard {
    /// 403 when Host is not one of this server's names or Origin is another site.
    fn check_host_and_origin(&self, headers: &HeaderMap) -> Result<(), EdgeError> {
        let host = headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let name = host_name(host);
        let allowed = name.eq_ignore_ascii_case("localhost")
            || matches!(name, "127.0.0.1" | "::1")
            || name.parse::<std::net::IpAddr>().is_ok()
            || self
                .allowed_hosts
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(name));
        if !allowed {
            return Err(EdgeError::Forbidden(format!(
                "host {host:?} is not a name of this server; add it with --allowed-host"
            )));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or_default();
            let same = origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host));
            if !same && !self.allowed_origins.iter().any(|allowed| allowed == origin) {
                return Err(EdgeError::Forbidden(format!(
                    "cross-origin request from {origin:?} refused; add it with --allowed-origin"
                )));
            }
        }
        Ok(())
    }
}

/// CORS for the origins given with `--allowed-origin` (none: no CORS headers, so browsers
/// keep other sites' pages out). Outermost layer: it answers preflight requests itself, which
/// carry no token.
pub fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<axum::http::HeaderValue> = origins
        .iter()
        .filter_map(|origin| axum::http::HeaderValue::from_str(origin).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
        ])
}

/// The host part of a Host header (`name`, `name:port`, `[v6]:port`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// The scope an HTTP route needs; `None` for open routes (health).
fn http_scope(request: &Request) -> Option<Scope> {
    let path = request.uri().path();
    match path {
        "/healthz" => None,
        "/v1/traces" | "/v1/logs" => Some(Scope::Ingest),
        "/purge" | "/api/v1/admin" => Some(Scope::Admin),
        _ => Some(Scope::Query),
    }
}

/// axum middleware: Host and Origin, then the token and its scope; the [`Grant`] goes into
/// the request's extensions for handlers that check more (content).
pub async fn http_middleware(
    State(guard): State<Arc<HttpGuard>>,
    mut request: Request,
    next: Next,
) -> Response {
    // Health answers probes that name the service as they see it (a load balancer, a
    // container network); it reveals nothing, so neither Host nor token is checked there.
    if http_scope(&request).is_none() {
        return next.run(request).await;
    }
    // OTLP exporters read a refusal as a `google.rpc.Status` in their request's encoding.
    let refuse = |request: &Request, error: EdgeError| {
        guard.metrics.refused("http", error.http_status().as_u16());
        if http_scope(request) == Some(Scope::Ingest) {
            crate::otlp::http_error_for(request.headers(), error)
        } else {
            error.into_response()
        }
    };
    if let Err(error) = guard.check_host_and_origin(request.headers()) {
        return refuse(&request, error);
    }
    // The web page and its assets hold no data: a browser loads them without a token, and the
    // page then sends the viewer's token with every query (crate::web).
    if request.method() == axum::http::Method::GET && crate::web::is_page_path(request.uri().path())
    {
        return next.run(request).await;
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let grant = match guard.tokens.grant(authorization) {
        Ok(grant) => grant,
        Err(error) => return refuse(&request, error),
    };
    if let Some(scope) = http_scope(&request)
        && let Err(error) = grant.require(scope, request.uri().path())
    {
        return refuse(&request, error);
    }
    request.extensions_mut().insert(grant);
    next.run(request).await
}

/// A tower layer checking tokens on a gRPC server: OTLP's `TraceService` and `LogsService`
/// need `ingest`,
/// everything else (Jaeger storage) `query`.
#[derive(Debug, Clone)]
pub struct GrpcAuthLayer {
    tokens: Arc<Tokens>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl GrpcAuthLayer {
    /// A layer over `tokens`, counting refusals in `metrics`.
    pub fn new(tokens: Arc<Tokens>, metrics: Arc<crate::metrics::Metrics>) -> Self {
        GrpcAuthLayer { tokens, metrics }
    }
}

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcAuth {
            inner,
            tokens: Arc::clone(&self.tokens),
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The service of [`GrpcAuthLayer`].
#[derive(Debug, Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    tokens: Arc<Tokens>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let scope = if path.starts_with("/opentelemetry.proto.collector.trace.v1.TraceService/")
            || path.starts_with("/opentelemetry.proto.collector.logs.v1.LogsService/")
        {
            Scope::Ingest
        } else {
            Scope::Query
        };
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        let checked = self
            .tokens
            .grant(authorization)
            .and_then(|grant| grant.require(scope, request.uri().path()));
        if let Err(error) = checked {
            self.metrics.refused("grpc", error.http_status().as_u16());
            let response = error.into_status().into_http();
            return Box::pin(async move { Ok(response) });
        }
        // The clone is the one made ready by `poll_ready`'s contract (tower's usual pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::from_sections(&[
            TokenSection {
                name: "collector".into(),
                sha256: token_hash("secret-ingest"),
                scopes: vec![Scope::Ingest],
            },
            TokenSection {
                name: "analyst".into(),
                sha256: token_hash("secret-query"),
                scopes: vec![Scope::Query],
            },
        ])
        .unwrap()
    }

    #[test]
    fn tokens_are_matched_by_hash_and_carry_their_scopes() {
        let tokens = tokens();
        let grant = tokens.grant(Some("Bearer secret-ingest")).unwrap();
        assert_eq!(grant.name, "collector");
        assert!(grant.allows(Scope::Ingest) && !grant.allows(Scope::Query));
        let error = grant.require(Scope::Query, "SQL").unwrap_err();
        assert_eq!(error.http_status(), 403);
        assert!(
            error.message().contains("query scope"),
            "{}",
            error.message()
        );
        for header in [
            None,
            Some("Bearer nope"),
            Some("Basic abc"),
            Some("secret-query"),
        ] {
            let error = tokens.grant(header).unwrap_err();
            assert_eq!(error.http_status(), 401, "{header:?}");
            assert_eq!(error.grpc_code(), tonic::Code::Unauthenticated);
        }
        // Without tokens, everything is allowed.
        let open = Tokens::default().grant(None).unwrap();
        assert!(open.allows(Scope::Admin) && open.allows(Scope::Content));
    }

    #[test]
    fn malformed_or_repeated_hashes_are_configuration_errors() {
        let bad = TokenSection {
            name: "x".into(),
            sha256: "abc".into(),
            scopes: vec![],
        };
        assert!(
            Tokens::from_sections(&[bad])
                .unwrap_err()
                .contains("64 hex")
        );
        let one = TokenSection {
            name: "a".into(),
            sha256: token_hash("t"),
            scopes: vec![Scope::Query],
        };
        let two = TokenSection {
            name: "b".into(),
            ..one.clone()
        };
        assert!(
            Tokens::from_sections(&[one, two])
                .unwrap_err()
                .contains("twice")
        );
    }

    #[test]
    fn host_and_origin_must_be_this_server() {
        let guard = HttpGuard {
            allowed_hosts: vec!["sightline.internal".into()],
            ..HttpGuard::default()
        };
        let check = |host: &str, origin: Option<&str>| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, host.parse().unwrap());
            if let Some(origin) = origin {
                headers.insert(header::ORIGIN, origin.parse().unwrap());
            }
            guard.check_host_and_origin(&headers).is_ok()
        };
        assert!(check("127.0.0.1:7070", None));
        assert!(check("localhost:7070", None));
        assert!(check("LOCALHOST:7070", None));
        assert!(check("[::1]:7070", None));
        assert!(check("10.1.2.3:7070", None));
        assert!(check("sightline.internal:7070", None));
        assert!(!check("evil.example:7070", None), "DNS rebinding");
        assert!(check("127.0.0.1:7070", Some("http://127.0.0.1:7070")));
        assert!(
            !check("127.0.0.1:7070", Some("http://evil.example")),
            "cross-site"
        );
        assert_eq!(host_name("[::1]:80"), "::1");
    }
}
