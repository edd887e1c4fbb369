//! The master's HTTP listener when the cluster is secure: one port that speaks both HTTPS (the
//! API and the dashboard, with the master's own certificate) and plain HTTP (only `/metrics`,
//! `/status` and `/health`, which monitoring scrapes without credentials and which expose
//! nothing that grants access).
//!
//! Each accepted connection is told apart by its first byte (a TLS record starts with 0x16, the
//! handshake type; no HTTP request line does), and TLS connections are handshaken off the accept
//! loop, each within [`HANDSHAKE_TIMEOUT`], so a slow or silent client holds up nobody else.
//! Which kind a request arrived on reaches the handlers as [`Transport`]; the router refuses
//! everything but the public pages on plain connections of a secure master, so a bearer token
//! never travels in the clear.
//!
//! Clients authenticate over HTTPS with bearer tokens only (browsers and `curl` rarely hold a
//! client certificate): no client certificate is requested.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::security::tls::{TlsFiles, HANDSHAKE_TIMEOUT};
use crate::shutdown::Shutdown;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// Connections sniffed and handshaken but not yet taken by the server.
const ACCEPT_QUEUE: usize = 64;

/// How a request reached the server (an extension on every request, from [`Conn`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP on a master without TLS (`insecure = true`): everything is served.
    Insecure,
    /// Plain HTTP on a secure master: only the public pages.
    Plain,
    /// HTTPS.
    Tls,
}

/// The TLS acceptor for `files`: the master's certificate chain and key, TLS 1.2 and 1.3,
/// HTTP/1.1 only (what the API and the browser need).
pub fn acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the key {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the HTTPS certificate and key")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// One accepted connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream, Transport),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    pub fn transport(&self) -> Transport {
        match self {
            Conn::Plain(_, t) => *t,
            Conn::Tls(_) => Transport::Tls,
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
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of one HTTP listener, for `axum::serve`.
pub struct Incoming {
    rx: mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
}

impl Incoming {
    /// Accepts on `listener` until `shutdown`: plain HTTP only without `tls`, else both.
    pub fn start(
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        mut shutdown: Shutdown,
    ) -> io::Result<Incoming> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = shutdown.wait() => return,
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            // Out of descriptors and the like: back off a moment, keep serving.
                            tracing::warn!(error = %e, "http accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let Some(acceptor) = tls.clone() else {
                    if tx.send((Conn::Plain(tcp, Transport::Insecure), peer)).await.is_err() {
                        return;
                    }
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, sniff(tcp, acceptor)).await;
                    match conn {
                        Ok(Ok(c)) => {
                            let _ = tx.send((c, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "https handshake failed"),
                        Err(_) => tracing::debug!(%peer, "https handshake timed out"),
                    }
                });
            }
        });
        Ok(Incoming { rx, local })
    }
}

/// Plain or TLS, by the connection's first byte; TLS is handshaken here.
async fn sniff(tcp: TcpStream, acceptor: TlsAcceptor) -> io::Result<Conn> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a request"));
    }
    if first[0] != TLS_HANDSHAKE {
        return Ok(Conn::Plain(tcp, Transport::Plain));
    }
    Ok(Conn::Tls(Box::new(acceptor.accept(tcp).await?)))
}

impl axum::serve::Listener for Incoming {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop stopped (shutdown): the server's graceful shutdown ends the rest.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// What every request learns of its connection (axum's `ConnectInfo`).
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub transport: Transport,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Incoming>>
    for ConnInfo
{
    fn connect_info(s: axum::serve::IncomingStream<'_, Incoming>) -> ConnInfo {
        ConnInfo { transport: s.io().transport() }
    }
}
