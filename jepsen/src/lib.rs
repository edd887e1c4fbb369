//! triad's chaos suite, in the spirit of Jepsen: real masters and executors on separate network
//! hosts (network namespaces), concurrent clients recording a history, a nemesis injecting faults,
//! and checkers that judge the history afterwards.

pub mod checker;
pub mod history;
pub mod lazyfs;
