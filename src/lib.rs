//! triad: a fault-tolerant job scheduler.
//!
//! The tree is the architecture:
//! - [`state`]: the replicated state machine, pure (commands in, state and outcomes out);
//! - [`scheduler`]: the placement planner, pure (state snapshot in, plan out);
//! - [`store`] and [`raft`]: openraft on sled, and Raft between masters over gRPC;
//! - [`master`]: a master's gRPC services and leader duties;
//! - [`client`] and [`cli`]: the client library and the `triad` command line;
//! - [`api`]: the wire protocol (`proto/`) and its conversions.

pub mod api;
pub mod chaos;
pub mod cli;
pub mod client;
pub mod executor;
pub mod master;
pub mod metrics;
pub mod raft;
pub mod scheduler;
pub mod shutdown;
pub mod state;
pub mod store;
