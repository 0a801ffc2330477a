//! [`Listening`]: a bound listener, plain TCP or TLS, that every server (tonic and axum) serves
//! the same way; [`Conn`] is its connection either way.
//!
//! Invariants: accepted TCP connections have Nagle's algorithm off (a small streamed answer
//! must not wait for the client's delayed ACK, ~40 ms); a failed accept (out of file
//! descriptors) is logged and retried after 100 ms, never ends the server.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::warn;

use crate::tls::{Protocol, Tls, TlsListener};

/// A bound listener: plain TCP, or TLS when the server has a certificate.
#[derive(Debug)]
pub enum Listening {
    /// Plain TCP.
    Plain(TcpListener),
    /// TLS (handshakes done before a connection is handed out).
    Tls(TlsListener),
}

/// An accepted connection.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Listening {
    /// Binds `addr` (port 0 picks one), serving TLS for `protocol` when `tls` is given.
    pub async fn bind(
        addr: SocketAddr,
        what: &str,
        tls: Option<&Tls>,
        protocol: Protocol,
    ) -> anyhow::Result<Listening> {
        use anyhow::Context as _;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for {what} on {addr}"))?;
        Ok(match tls {
            None => Listening::Plain(listener),
            Some(tls) => Listening::Tls(tls.listen(listener, protocol)?),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Listening::Plain(listener) => listener.local_addr(),
            Listening::Tls(listener) => Ok(listener.local_addr()),
        }
    }

    /// The next connection.
    pub async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self {
            Listening::Plain(listener) => loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        return (Conn::Plain(stream), peer);
                    }
                    Err(error) => {
                        warn!(error = %error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            },
            Listening::Tls(listener) => {
                let (stream, peer) = listener.accept().await;
                (Conn::Tls(Box::new(stream)), peer)
            }
        }
    }

    /// The accepted connections as the stream tonic serves.
    pub fn into_incoming(self) -> impl futures::Stream<Item = io::Result<Conn>> {
        futures::stream::unfold(self, |mut listening| async move {
            let (conn, _) = listening.accept().await;
            Some((Ok(conn), listening))
        })
    }
}

impl axum::serve::Listener for Listening {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        Listening::accept(self).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Listening::local_addr(self)
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Conn::Plain(stream) => stream.connect_info(),
            Conn::Tls(stream) => stream.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(stream) => stream.is_write_vectored(),
            Conn::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Conn::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
