//! TLS on the listeners (rustls with the aws-lc-rs provider): the certificate chain and key are read
//! from PEM files once at startup, and every listener then accepts TLS only.
//!
//! Invariants:
//! - a handshake never blocks the accept loop or another handshake: each runs in its own task,
//!   one that takes longer than [`HANDSHAKE_TIMEOUT`] is dropped, and a connection arriving
//!   while [`MAX_HANDSHAKES`] are in progress is closed at once;
//! - a failed handshake closes that connection only (logged at debug: scanners and plain-text
//!   clients are routine on an exposed port);
//! - gRPC listeners offer ALPN `h2` (gRPC clients require it), HTTP listeners `http/1.1`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

/// Longest a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once per listener; a connection beyond them is closed at once
/// (bounding memory; idle connections that never start TLS must not queue real clients).
pub const MAX_HANDSHAKES: usize = 8192;

/// The PEM files of the server's certificate chain and private key (`[tls]` in the
/// configuration file, or `--tls-cert` and `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// What a listener speaks inside TLS (its ALPN protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// HTTP/1.1 (OTLP/HTTP and the HTTP API).
    Http1,
    /// The PostgreSQL protocol (TLS after an SSLRequest; no ALPN, as libpq before 17).
    Postgres,
}

/// Loaded certificates, ready to build acceptors.
#[derive(Debug, Clone)]
pub struct Tls {
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl Tls {
    /// Reads and checks the PEM files: at least one certificate, a key, and a key that
    /// matches the certificate.
    pub fn load(files: &TlsFiles) -> anyhow::Result<Tls> {
        let certs = read_certs(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| {
            anyhow::anyhow!(
                "cannot read the TLS private key {}: {}",
                files.key.display(),
                pem_error(&error)
            )
        })?;
        let tls = Tls {
            certs,
            key: Arc::new(key),
        };
        // Builds once to find a key that does not match its certificate now, not at the first
        // handshake.
        tls.server_config(Protocol::Http1).with_context(|| {
            format!(
                "TLS certificate {} and key {} do not make a usable pair",
                files.cert.display(),
                files.key.display()
            )
        })?;
        Ok(tls)
    }

    fn server_config(&self, protocol: Protocol) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        config.alpn_protocols = match protocol {
            Protocol::Grpc => vec![b"h2".to_vec()],
            Protocol::Http1 => vec![b"http/1.1".to_vec()],
            Protocol::Postgres => Vec::new(),
        };
        Ok(Arc::new(config))
    }

    /// An acceptor for handshakes the caller starts itself (the PostgreSQL listener answers
    /// an SSLRequest first).
    pub fn acceptor(&self, protocol: Protocol) -> anyhow::Result<TlsAcceptor> {
        Ok(TlsAcceptor::from(self.server_config(protocol)?))
    }

    /// Starts accepting TLS connections on `listener` (until the returned listener is dropped).
    pub fn listen(&self, listener: TcpListener, protocol: Protocol) -> anyhow::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(self.server_config(protocol)?);
        let (sender, receiver) = mpsc::channel(MAX_HANDSHAKES);
        tokio::spawn(accept_loop(listener, acceptor, sender));
        Ok(TlsListener {
            receiver,
            local_addr,
        })
    }
}

/// A listener whose connections completed their TLS handshake.
#[derive(Debug)]
pub struct TlsListener {
    receiver: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// The next connection whose handshake completed.
    pub async fn accept(&mut self) -> (TlsStream<TcpStream>, SocketAddr) {
        match self.receiver.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends when this listener is dropped; until then, wait.
            None => std::future::pending().await,
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer) = tokio::select! {
            () = sender.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    warn!(error = %error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
            debug!(%peer, "too many TLS handshakes in progress; connection closed");
            continue;
        };
        // Small streamed answers must not wait for the client's delayed ACK.
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            drop(permit);
            match handshake {
                Ok(Ok(tls)) => {
                    let _ = sender.send((tls, peer)).await;
                }
                Ok(Err(error)) => debug!(%peer, error = %error, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// The one crypto provider of this binary: aws-lc-rs, preferring the post-quantum hybrid key
/// exchange X25519MLKEM768 with clients that offer it.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot read the TLS certificate {}: {}",
                path.display(),
                pem_error(&error)
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the TLS certificate file {} holds no PEM certificate",
        path.display()
    );
    Ok(certs)
}

fn pem_error(error: &rustls_pki_types::pem::Error) -> String {
    match error {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM item of the expected kind".into(),
        other => format!("{other:?}"),
    }
}
