//! `triad bench submit --api http`: the same closed-loop submissions as `--api unary`, each one
//! `POST /v1/jobs` to a master's HTTP API (HTTPS with the cluster CA and a bearer token on a
//! secure cluster), so the two APIs' costs compare side by side. HTTP/1.1 carries one request at
//! a time per connection, so every worker keeps its own keep-alive connection (opened on first
//! use, opened again after an error).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use super::{closed_loop, trivial_job, Load, Report};

/// Where and how to reach one master's HTTP API.
struct Target {
    /// `host:port`.
    addr: String,
    /// TLS for `https://` URLs.
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// `Bearer …`, when a token is given.
    auth: Option<String>,
}

/// Parses `https://host:port` (or `http://`): the address and whether it is TLS.
fn parse_url(url: &str) -> anyhow::Result<(String, bool)> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        anyhow::bail!("--http {url:?}: give https://HOST:PORT (or http:// for an insecure cluster)")
    };
    let addr = rest.trim_end_matches('/');
    anyhow::ensure!(!addr.is_empty() && !addr.contains('/'), "--http {url:?}: no path, please");
    Ok((addr.to_string(), tls))
}

fn connector(ca: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("parsing {}", ca.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

impl Target {
    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            Some((c, name)) => {
                let tls = c.connect(name.clone(), tcp).await?;
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(conn);
                Ok(send)
            }
            None => {
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                Ok(send)
            }
        }
    }

    /// One submission on `conn`: true when the job was created (201) or named again (200).
    async fn submit(
        &self,
        conn: &mut SendRequest<Full<Bytes>>,
        key: String,
    ) -> anyhow::Result<bool> {
        let body = serde_json::to_vec(&trivial_job(key, false))?;
        let mut req = http::Request::post("/v1/jobs")
            .header(http::header::HOST, &self.addr)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(a) = &self.auth {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        let resp = conn.send_request(req.body(Full::new(Bytes::from(body)))?).await?;
        let ok = resp.status().is_success();
        resp.into_body().collect().await?;
        Ok(ok)
    }
}

/// A worker's connection, opened on first use and again after an error.
type Slot = tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>;

/// Closed-loop `POST /v1/jobs` against `url` for `load`, one connection per worker.
pub async fn submit(
    url: &str,
    ca: Option<&Path>,
    token: Option<&str>,
    load: Load,
) -> anyhow::Result<Report> {
    let (addr, tls) = parse_url(url)?;
    let tls = match (tls, ca) {
        (false, _) => None,
        (true, None) => anyhow::bail!("an https:// target needs the cluster CA (TRIAD_CA or --ca)"),
        (true, Some(ca)) => {
            let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h).to_string();
            let name = ServerName::try_from(host).context("the --http host")?;
            Some((connector(ca)?, name))
        }
    };
    let auth = token.map(|t| format!("Bearer {}", t.trim()));
    let target = Arc::new(Target { addr, tls, auth });
    // Connect one first, so a wrong address or CA fails the bench at once, not as errors.
    target.connect().await.with_context(|| format!("connecting to {url}"))?;
    let conns: Arc<Vec<Slot>> =
        Arc::new((0..load.concurrency).map(|_| tokio::sync::Mutex::new(None)).collect());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut report = closed_loop("submit", load, move |w, i| {
        let (target, conns, key) = (target.clone(), conns.clone(), format!("{run}-{w}-{i}"));
        async move {
            let mut slot = conns[w].lock().await;
            if slot.is_none() {
                *slot = target.connect().await.ok();
            }
            let Some(conn) = slot.as_mut() else { return false };
            match target.submit(conn, key).await {
                Ok(ok) => ok,
                Err(_) => {
                    *slot = None;
                    false
                }
            }
        }
    })
    .await;
    report.extra.insert("API".into(), "http".into());
    report.extra.insert("CONNECTIONS".into(), load.concurrency.to_string());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn targets_are_scheme_host_port() {
        assert_eq!(parse_url("https://127.0.0.1:7151/").unwrap(), ("127.0.0.1:7151".into(), true));
        assert_eq!(parse_url("http://h:1").unwrap(), ("h:1".into(), false));
        assert!(parse_url("127.0.0.1:7151").is_err());
        assert!(parse_url("https://h:1/v1/jobs").is_err());
    }
}
