//! Client side of Raft between masters: one cached tonic channel per peer, a deadline on every
//! call, and openraft's errors mapped so that it backs off (briefly) from unreachable peers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec;
use super::{NodeId, TypeConfig};
use crate::api::pb::raft_service_client::RaftServiceClient;
use crate::api::pb::RaftPayload;
use crate::api::MAX_MESSAGE_BYTES;

use crate::api::{Channel, Dialer, ServerName};

/// Caches one channel per address and expected server; shared by Raft, forwarding, status
/// gathering and the leader's calls to executors. Every channel carries the master's own
/// credentials.
#[derive(Clone, Default)]
pub struct Channels {
    dialer: Dialer,
    inner: Arc<Mutex<HashMap<(String, ServerName), Channel>>>,
}

impl Channels {
    pub fn new(dialer: Dialer) -> Channels {
        Channels { dialer, inner: Default::default() }
    }

    /// The channel to the master at `addr`.
    pub fn get(&self, addr: &str) -> anyhow::Result<Channel> {
        self.to(addr, ServerName::Master)
    }

    /// The channel to executor `id`'s worker API at `addr`.
    pub fn executor(&self, addr: &str, id: &str) -> anyhow::Result<Channel> {
        self.to(addr, ServerName::Executor(id.to_string()))
    }

    fn to(&self, addr: &str, server: ServerName) -> anyhow::Result<Channel> {
        let mut map = self.inner.lock().expect("channel cache poisoned");
        let key = (addr.to_string(), server);
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let c = self.dialer.channel(addr, &key.1)?;
        map.insert(key, c.clone());
        Ok(c)
    }
}

/// openraft's network factory.
#[derive(Clone)]
pub struct Network {
    pub channels: Channels,
    /// Told when a voter refuses our vote for a longer log (see [`super::election`]).
    pub election: super::election::Election,
    /// How long openraft waits before retrying an unreachable peer.
    pub retry: Duration,
}

pub struct Peer {
    target: NodeId,
    addr: String,
    channels: Channels,
    election: super::election::Election,
    retry: Duration,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            channels: self.channels.clone(),
            election: self.election.clone(),
            retry: self.retry,
        }
    }
}

type RpcErr<E> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

#[derive(Clone, Copy)]
enum Rpc {
    Vote,
    Append,
    Snapshot,
}

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let chan = self.channels.get(&self.addr).map_err(|e| {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!("{e:#}"))))
        })?;
        let mut client = RaftServiceClient::new(chan)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(ttl);
        let fut = async {
            match rpc {
                Rpc::Vote => client.vote(request).await,
                Rpc::Append => client.append_entries(request).await,
                Rpc::Snapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, fut).await {
            Err(_) => {
                let e = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("raft rpc to {} timed out", self.addr),
                );
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Err(status)) => return Err(RPCError::Unreachable(Unreachable::new(&status))),
            Ok(Ok(r)) => r.into_inner(),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode_limited(&reply.data, codec::RPC_LIMIT)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        // openraft 0.9 bounds an append by its `heartbeat_interval`, which the master sets just
        // under the leader lease (see `master::raft_config`), not by triad's heartbeat period.
        self.call(Rpc::Append, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(Rpc::Snapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        let resp: VoteResponse<NodeId> = self.call(Rpc::Vote, &rpc, option.hard_ttl()).await?;
        if !resp.vote_granted && resp.last_log_id > rpc.last_log_id {
            self.election.greater_log();
        }
        Ok(resp)
    }

    /// openraft's default is 500 ms: a master that restarts would campaign before the leader
    /// retried it. Retry within about a heartbeat instead.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(self.retry))
    }
}
