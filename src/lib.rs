//! triad: a fault-tolerant job scheduler.
//!
//! The tree is the architecture:
//! - [`state`]: the replicated state machine, pure (commands in, state and outcomes out);
//! - [`scheduler`]: the placement planner, pure (state snapshot in, plan out);
//! - [`store`] and [`raft`]: openraft on sled, and Raft between masters over gRPC;
//! - [`master`]: a master's gRPC services and leader duties;
//! - [`client`] and [`cli`]: the client library and the `triad` command line;
//! - [`api`]: the wire protocol (`proto/`), its conversions, the gRPC channel builder, wire
//!   limits and the contracts both ends of a call share;
//! - [`executor`]: the executor process; [`fencing`] and [`timings`]: the fencing rule and every
//!   related duration, shared by master and executor;
//! - [`security`]: TLS credentials, tokens, roles and the one authorisation layer every server
//!   runs.
//!
//! Layers point one way (checked by `tests/layering.rs`), lowest first: the leaf utilities
//! (`shutdown`, `chaos`, `metrics`, `timings`, `security`, `fencing`), then `state` <- `scheduler`,
//! `state` <- `api` <- `raft` <- `store` <- `master`; `client` uses only `api`; `executor` uses
//! `api` and `client`; `cli` uses everything.

pub mod api;
pub(crate) mod chaos;
pub mod cli;
pub mod client;
pub(crate) mod executor;
pub(crate) mod fencing;
pub mod files;
#[cfg(test)]
mod golden;
pub mod master;
pub(crate) mod metrics;
pub(crate) mod raft;
pub(crate) mod scheduler;
pub mod security;
pub(crate) mod shutdown;
pub(crate) mod state;
pub(crate) mod store;
pub(crate) mod timings;
