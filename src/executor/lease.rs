//! Moved to [`crate::fencing`], which the leader uses too; this path stays until the executor's
//! imports point there.

pub use crate::fencing::*;
