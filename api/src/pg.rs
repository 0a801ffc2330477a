//! The PostgreSQL wire protocol listener (`--pg-addr`): psql, Grafana's PostgreSQL data source
//! and PostgreSQL drivers run Sightline SQL over it.
//!
//! Every statement runs through [`query::SqlEngine`] exactly as `POST /api/v1/sql` does: the
//! same read-only guard, result limits, memory budget, timeout, query pool and metrics. This
//! module only speaks the protocol (pgwire does the message codec and the simple and extended
//! query flows) and answers what PostgreSQL clients send besides queries: session statements
//! (`session.rs`), a few catalog spellings SQL cannot parse (`compat.rs`), and the
//! conversion between Arrow and PostgreSQL values (`values.rs`).
//!
//! Invariants:
//! - every failure is an `ErrorResponse` with a SQLSTATE; only authentication failures and
//!   protocol violations end the connection;
//! - at most [`MAX_CONNECTIONS`] connections are served; one more is answered with SQLSTATE
//!   53300 and closed;
//! - a client must be authenticated within [`STARTUP_TIMEOUT`] of connecting, and a connection
//!   idle for [`IDLE_TIMEOUT`] is closed, so half-open connections cannot pile up;
//! - with tokens configured, the password must be a token with the query scope (else 28P01),
//!   and on a listener beyond loopback with TLS configured it is only accepted over TLS.

mod compat;
mod session;
mod values;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, NoopHandler, PgWireConnectionState, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{PgWireMessageServerCodec, process_error, process_message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Framed, FramedParts};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::auth::{Grant, Scope, Tokens};
use crate::edge_error::EdgeError;
use crate::listener::Conn;
use crate::server::AppState;

use session::Session;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// Longest a client may take from connecting to being authenticated (TLS handshake included).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a connection may stay silent between messages before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// SSLRequest and GSSENCRequest codes (the "protocol version" of an 8-byte first packet).
const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;

/// Name of the listener in `sightline_auth_refusals_total`.
const LISTENER: &str = "pg";

/// A statement after Parse: a session statement answered here, or a planned query.
#[derive(Debug, Clone)]
pub(crate) enum Statement {
    /// `SET`, `BEGIN`, `SHOW ...`: answered without the SQL engine.
    Session(Session),
    /// A query, checked by the guard and planned.
    Query {
        /// The SQL as run (after [`compat::rewrite`]).
        sql: String,
        /// Its parameter types and result schema.
        prepared: query::Prepared,
        /// The parameter types the client declared in Parse (`None`: unspecified), used where
        /// the statement fixes none (`LIMIT $1`).
        declared: Vec<Option<Type>>,
    },
}

type Socket = Framed<Conn, PgWireMessageServerCodec<Statement>>;

/// Serves the PostgreSQL protocol on `listener` until `shutdown` is cancelled; then waits for
/// the connections' statements in progress to finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    tokens: Arc<Tokens>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let loopback = listener.local_addr()?.ip().is_loopback();
    let backend = Arc::new(Backend {
        parser: Arc::new(Parser {
            state: Arc::clone(&state),
        }),
        state,
        tokens,
        // Same rule as the other listeners: beyond loopback, secrets travel over TLS only.
        password_needs_tls: !loopback && tls.is_some(),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(error = %error, "accepting a PostgreSQL connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => {
                connections.spawn(connection(
                    stream,
                    peer,
                    Arc::clone(&backend),
                    tls.clone(),
                    shutdown.clone(),
                    permit,
                ));
            }
            Err(_) => {
                connections.spawn(refuse_busy(stream));
            }
        }
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Answers a connection over [`MAX_CONNECTIONS`] with a FATAL 53300 and closes it.
async fn refuse_busy(mut stream: TcpStream) {
    let error = ErrorInfo::new(
        "FATAL".to_owned(),
        "53300".to_owned(),
        format!(
            "too many connections: this server serves at most {MAX_CONNECTIONS} PostgreSQL connections at once; try again later"
        ),
    );
    let mut buffer = BytesMut::new();
    if PgWireBackendMessage::ErrorResponse(error.into())
        .encode(&mut buffer)
        .is_ok()
    {
        let _ = tokio::time::timeout(STARTUP_TIMEOUT, stream.write_all(&buffer)).await;
    }
}

/// One client connection, from SSL negotiation to `Terminate` (or a timeout, a fatal error,
/// shutdown).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    backend: Arc<Backend>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let startup_deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    let negotiated =
        tokio::time::timeout_at(startup_deadline, negotiate(stream, tls.as_ref())).await;
    let (conn, secure, read_buf) = match negotiated {
        Ok(Ok(Some(negotiated))) => negotiated,
        Ok(Ok(None)) => return,
        Ok(Err(error)) => {
            debug!(peer = %peer, error = %error, "PostgreSQL connection failed before startup");
            return;
        }
        Err(_) => {
            debug!(peer = %peer, "PostgreSQL connection timed out before startup");
            return;
        }
    };
    let mut parts = FramedParts::new(
        conn,
        PgWireMessageServerCodec::new(pgwire::api::DefaultClient::new(peer, secure)),
    );
    parts.read_buf = read_buf;
    let mut socket: Socket = Framed::from_parts(parts);
    socket.set_state(PgWireConnectionState::AwaitingStartup);
    let noop = Arc::new(NoopHandler);
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let deadline = if starting {
            startup_deadline
        } else {
            tokio::time::Instant::now() + IDLE_TIMEOUT
        };
        let message = tokio::select! {
            () = shutdown.cancelled() => break,
            next = tokio::time::timeout_at(deadline, socket.next()) => match next {
                Err(_) => {
                    debug!(peer = %peer, starting, "PostgreSQL connection timed out");
                    break;
                }
                Ok(None) => break,
                Ok(Some(Err(error))) => {
                    // Undecodable bytes: say so and close (the stream cannot be resynchronised).
                    let _ = process_error(&mut socket, error, false).await;
                    break;
                }
                Ok(Some(Ok(message))) => message,
            },
        };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let extended = message.is_extended_query();
        if let Err(error) = process_message(
            message,
            &mut socket,
            Arc::clone(&backend),
            Arc::clone(&backend),
            Arc::clone(&backend),
            Arc::clone(&noop),
            Arc::clone(&noop),
        )
        .await
        {
            let fatal = error.is_fatal();
            if process_error(&mut socket, error, extended).await.is_err() || fatal {
                break;
            }
        }
    }
}

/// Answers SSLRequest (`S` and a TLS handshake when the server has a certificate, else `N`)
/// and GSSENCRequest (`N`). Returns the connection, whether it is TLS, and the bytes already
/// read of the startup message; `None` when the client gave up.
async fn negotiate(
    mut stream: TcpStream,
    tls: Option<&TlsAcceptor>,
) -> std::io::Result<Option<(Conn, bool, BytesMut)>> {
    // libpq sends at most a GSSENCRequest, then an SSLRequest, then the startup message.
    for _ in 0..3 {
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await?;
        let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        match (length, code) {
            (8, SSL_REQUEST_CODE) => match tls {
                Some(acceptor) => {
                    stream.write_all(b"S").await?;
                    let tls_stream = acceptor.accept(stream).await?;
                    return Ok(Some((
                        Conn::Tls(Box::new(tls_stream)),
                        true,
                        BytesMut::new(),
                    )));
                }
                None => stream.write_all(b"N").await?,
            },
            (8, GSSENC_REQUEST_CODE) => stream.write_all(b"N").await?,
            _ => {
                return Ok(Some((
                    Conn::Plain(stream),
                    false,
                    BytesMut::from(&head[..]),
                )));
            }
        }
    }
    Ok(None)
}

/// The handlers of every connection: startup (authentication), simple and extended queries.
#[derive(Debug)]
struct Backend {
    state: Arc<AppState>,
    tokens: Arc<Tokens>,
    parser: Arc<Parser>,
    password_needs_tls: bool,
}

/// The server parameters sent after authentication.
fn server_parameters() -> DefaultServerParameterProvider {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = query::pg_catalog::SERVER_VERSION.to_owned();
    parameters.is_superuser = false;
    parameters.default_transaction_read_only = true;
    parameters.time_zone = "UTC".to_owned();
    parameters
}

/// An ErrorResponse with `severity` (`ERROR`, `FATAL`), `code` (SQLSTATE) and `message`.
fn pg_error(severity: &str, code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

/// The grant of an authenticated connection (all scopes without tokens).
fn grant_of<C: ClientInfo + ?Sized>(client: &C) -> Option<Arc<Grant>> {
    client.session_extensions().get::<Grant>()
}

/// What the connection's grant may read.
fn access_of<C: ClientInfo + ?Sized>(client: &C) -> query::Access {
    query::Access {
        content: grant_of(client).is_some_and(|grant| grant.allows(Scope::Content)),
    }
}

#[async_trait]
impl StartupHandler for Backend {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                if self.tokens.is_empty() {
                    // No tokens: every scope, as on the other listeners (loopback only).
                    let grant = self
                        .tokens
                        .grant(None)
                        .map_err(|error| pg_error("FATAL", "28000", error.message()))?;
                    client.session_extensions().insert(grant);
                    return finish_authentication(client, &server_parameters()).await;
                }
                if self.password_needs_tls && !client.is_secure() {
                    self.state.metrics.refused(LISTENER, 401);
                    return Err(pg_error(
                        "FATAL",
                        "28000",
                        "this server takes passwords (tokens) over TLS only: connect with sslmode=require",
                    ));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
                Ok(())
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let password = message.into_password()?;
                let header = format!("Bearer {}", password.password);
                match self.tokens.grant(Some(&header)) {
                    Ok(grant) if grant.allows(Scope::Query) => {
                        client.session_extensions().insert(grant);
                        finish_authentication(client, &server_parameters()).await
                    }
                    Ok(grant) => {
                        self.state.metrics.refused(LISTENER, 403);
                        Err(pg_error(
                            "FATAL",
                            "42501",
                            format!("token {:?} lacks the query scope", grant.name),
                        ))
                    }
                    Err(_) => {
                        self.state.metrics.refused(LISTENER, 401);
                        Err(pg_error(
                            "FATAL",
                            "28P01",
                            "password authentication failed: the password must be an API token with the query scope",
                        ))
                    }
                }
            }
            _ => Err(pg_error(
                "FATAL",
                "08P01",
                "expected a startup or password message",
            )),
        }
    }
}

impl Backend {
    /// The result byte limit of the SQL engine, also applied to the encoded rows.
    fn max_result_bytes(&self) -> usize {
        self.state.sql.options().max_result_bytes
    }

    /// Runs `sql` through the SQL engine (guard, limits, pool) and counts it like an HTTP query.
    async fn run(
        &self,
        sql: &str,
        access: query::Access,
        parameters: Vec<arrow::array::ArrayRef>,
    ) -> PgWireResult<query::QueryOutput> {
        let started = Instant::now();
        let result = self.state.sql.execute_params(sql, access, parameters).await;
        match result {
            Ok(output) => {
                self.state.metrics.query(200, started.elapsed());
                Ok(output)
            }
            Err(error) => {
                let error = query_error(error);
                self.state
                    .metrics
                    .query(error.1.http_status().as_u16(), started.elapsed());
                Err(error.into_pg())
            }
        }
    }
}

/// A query error with its SQLSTATE, as the edge sees it (status for metrics, public message).
struct QueryFailure(&'static str, EdgeError);

impl QueryFailure {
    /// The ErrorResponse (server-side failures are logged here, once).
    fn into_pg(self) -> PgWireError {
        self.1.log();
        pg_error("ERROR", self.0, self.1.message())
    }
}

/// The SQLSTATE of a query error (PostgreSQL's codes for the same conditions).
fn query_error(error: query::Error) -> QueryFailure {
    let code = match &error {
        query::Error::InvalidQuery(_) => "42601",
        query::Error::Rejected { .. } => "25006",
        query::Error::Execution(_) => "22000",
        query::Error::ResourcesExhausted(_) => "53200",
        query::Error::Busy { .. } => "53000",
        query::Error::Timeout(_) => "57014",
        query::Error::Forbidden(_) => "42501",
        query::Error::TooComplex(_)
        | query::Error::TooLarge { .. }
        | query::Error::TooManyRows { .. } => "54000",
        _ => "XX000",
    };
    QueryFailure(code, EdgeError::from(error))
}

#[async_trait]
impl SimpleQueryHandler for Backend {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if compat::is_blank(query) {
            return Ok(vec![Response::EmptyQuery]);
        }
        let sql = compat::rewrite(query);
        if let Some(session) = Session::classify(&sql) {
            return Ok(vec![session.respond(&Format::UnifiedText)?]);
        }
        let output = match self.run(&sql, access_of(client), Vec::new()).await {
            Ok(output) => output,
            Err(PgWireError::UserError(info)) => return Ok(vec![Response::Error(info)]),
            Err(other) => return Err(other),
        };
        match values::encode(&output, &Format::UnifiedText, self.max_result_bytes()) {
            Ok(response) => Ok(vec![Response::Query(response)]),
            Err(PgWireError::UserError(info)) => Ok(vec![Response::Error(info)]),
            Err(other) => Err(other),
        }
    }
}

/// Parses and plans statements of the extended protocol.
#[derive(Debug)]
struct Parser {
    state: Arc<AppState>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Statement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if compat::is_blank(sql) {
            return Ok(None);
        }
        let sql = compat::rewrite(sql);
        if let Some(session) = Session::classify(&sql) {
            return Ok(Some(Statement::Session(session)));
        }
        let prepared = self
            .state
            .sql
            .prepare(&sql, access_of(client))
            .await
            .map_err(|error| query_error(error).into_pg())?;
        let declared = types
            .iter()
            .map(|declared| {
                declared
                    .clone()
                    .filter(|declared| *declared != Type::UNKNOWN)
            })
            .collect();
        Ok(Some(Statement::Query {
            sql: sql.into_owned(),
            prepared,
            declared,
        }))
    }

    fn get_parameter_types(&self, statement: &Statement) -> PgWireResult<Vec<Type>> {
        Ok(match statement {
            Statement::Session(_) => Vec::new(),
            // The statement's own type, else the client's, else text.
            Statement::Query {
                prepared, declared, ..
            } => prepared
                .parameters
                .iter()
                .enumerate()
                .map(|(index, data_type)| match data_type {
                    Some(data_type) => values::pg_type(data_type),
                    None => declared.get(index).cloned().flatten().unwrap_or(Type::TEXT),
                })
                .collect(),
        })
    }

    fn get_result_schema(
        &self,
        statement: &Statement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = format.unwrap_or(&Format::UnifiedText);
        Ok(match statement {
            Statement::Session(session) => session.fields(format),
            Statement::Query { prepared, .. } => values::fields(&prepared.schema, format),
        })
    }
}

#[async_trait]
impl ExtendedQueryHandler for Backend {
    type Statement = Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match &portal.statement.statement {
            Statement::Session(session) => session.respond(&portal.result_column_format),
            Statement::Query { sql, prepared, .. } => {
                let parameters = values::decode_parameters(portal, prepared)?;
                let output = self.run(sql, access_of(client), parameters).await?;
                Ok(Response::Query(values::encode(
                    &output,
                    &portal.result_column_format,
                    self.max_result_bytes(),
                )?))
            }
        }
    }
}
