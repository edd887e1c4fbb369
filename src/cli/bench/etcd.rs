//! `triad bench etcd-put`: the reference point of SPEC "Performance targets". Durable puts
//! against an etcd cluster (Debian's `etcd-server`, v3 gRPC API), driven by the same closed loop
//! as `bench submit`, so the ratio of the two is measured with one harness, on one machine, in
//! one sitting (`tests/bench/etcd-side-by-side.sh` runs both).
//!
//! Only `etcdserverpb.KV/Put` is needed, so its two messages are declared here by hand (field
//! numbers from etcd's `rpc.proto`) instead of vendoring etcd's protos; prost skips the response
//! fields it does not know.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tonic::codegen::http::uri::PathAndQuery;

use super::{closed_loop, Load, Report};

/// `etcdserverpb.PutRequest`: key = 1, value = 2 (lease, prev_kv, ... left unset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `etcdserverpb.PutResponse`, of which nothing is read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {}

/// Deadline of one put.
const PUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Closed-loop puts of `value_size`-byte values under unique keys to `endpoint` (give the etcd
/// leader's client URL host:port, as `bench submit` talks to triad's leader).
/// etcd's TLS, when its client URL is https: the CA to verify it by and the client certificate
/// to present (etcd's `--client-cert-auth`).
pub struct EtcdTls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// A channel to etcd at `endpoint`, over TLS when given (the endpoint's host is verified).
fn etcd_channel(
    endpoint: &str,
    tls: Option<&EtcdTls>,
) -> anyhow::Result<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{endpoint}"))
        .with_context(|| format!("bad etcd endpoint {endpoint:?}"))?
        .connect_timeout(crate::timings::CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if let Some(t) = tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))
        };
        ep = ep.tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read(&t.ca)?))
                .identity(Identity::from_pem(read(&t.cert)?, read(&t.key)?)),
        )?;
    }
    Ok(ep.connect_lazy())
}

pub async fn put(
    endpoint: &str,
    tls: Option<&EtcdTls>,
    load: Load,
    value_size: usize,
) -> anyhow::Result<Report> {
    // One channel (one HTTP/2 connection) per `--connections` and endpoint, as `bench submit`
    // does; with several endpoints (`a,b,c`), worker `w`'s `i`-th put goes to endpoint
    // `(w + i) % endpoints`, as `bench submit --api unary-any` spreads over masters (issue 19).
    let endpoints: Vec<&str> =
        endpoint.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    anyhow::ensure!(!endpoints.is_empty(), "no etcd endpoint given");
    let channels = (0..load.connections.max(1))
        .map(|_| endpoints.iter().map(|e| etcd_channel(e, tls)).collect())
        .collect::<anyhow::Result<Vec<Vec<_>>>>()?;
    let channels = Arc::new(channels);
    let value = Arc::new(vec![b'x'; value_size]);
    let run = uuid::Uuid::new_v4().simple().to_string();
    // Fail early and clearly when nothing answers there.
    for (e, chan) in endpoints.iter().zip(&channels[0]) {
        let probe =
            put_once(chan.clone(), format!("triad-bench/{run}/probe").into_bytes(), value.to_vec())
                .await;
        probe.map_err(|s| anyhow::anyhow!("etcd at {e} did not accept a put: {}", s.message()))?;
    }
    let mut report = closed_loop("etcd-put", load, move |w, i| {
        let per_endpoint = &channels[w % channels.len()];
        let (channel, value, key) = (
            per_endpoint[(w + i as usize) % per_endpoint.len()].clone(),
            value.clone(),
            format!("triad-bench/{run}/{w}/{i}").into_bytes(),
        );
        async move { put_once(channel, key, value.to_vec()).await.is_ok() }
    })
    .await;
    report.extra.insert("VALUE BYTES".into(), value_size.to_string());
    report.extra.insert("ENDPOINTS".into(), endpoints.len().to_string());
    Ok(report)
}

async fn put_once(
    channel: tonic::transport::Channel,
    key: Vec<u8>,
    value: Vec<u8>,
) -> Result<PutResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(PutRequest { key, value });
    req.set_timeout(PUT_TIMEOUT);
    let path = PathAndQuery::from_static("/etcdserverpb.KV/Put");
    grpc.unary(req, path, tonic_prost::ProstCodec::default()).await.map(|r| r.into_inner())
}
