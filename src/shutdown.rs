//! One shutdown mechanism for masters and executors (mini-redis style): a watch channel every
//! background task selects on, triggered by SIGINT/SIGTERM or by the owner.

use tokio::sync::watch;

/// The sending half: triggers shutdown for every [`Shutdown`] cloned from it.
#[derive(Clone)]
pub struct Trigger(watch::Sender<bool>);

/// The receiving half, cheap to clone into every task.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }
    /// Resolves once shutdown has been triggered (immediately if it already was).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
