//! Appends the history (`history.jsonl`) as it happens: one line per op, written through (no
//! buffer), so an interrupted run keeps everything recorded so far. Index and time are taken
//! under one lock, so both increase along the file.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use triad_jepsen::history::{monotonic_ns, Call, Op, OpType};

pub struct Recorder {
    inner: Mutex<Inner>,
    next_process: AtomicU64,
}

struct Inner {
    file: File,
    next_index: u64,
    error: Option<String>,
}

impl Recorder {
    pub fn create(path: &Path) -> anyhow::Result<Recorder> {
        let file = File::options()
            .create_new(true)
            .append(true)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Recorder {
            inner: Mutex::new(Inner { file, next_index: 0, error: None }),
            next_process: AtomicU64::new(0),
        })
    }

    /// A fresh logical process id (a new one after every `info`).
    pub fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }

    /// Records one op now; returns it.
    pub fn record(&self, process: u64, kind: OpType, call: Call) -> Op {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let op = Op { index: g.next_index, time_ns: monotonic_ns(), process, kind, call };
        g.next_index += 1;
        let mut line = serde_json::to_string(&op).expect("an op serializes");
        line.push('\n');
        if let Err(e) = g.file.write_all(line.as_bytes()) {
            g.error.get_or_insert_with(|| e.to_string());
        }
        op
    }

    pub fn invoke(&self, process: u64, call: Call) -> Op {
        self.record(process, OpType::Invoke, call)
    }

    /// The first write error, if any (the history on disk is then incomplete).
    pub fn error(&self) -> Option<String> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).error.clone()
    }

    pub fn ops(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).next_index
    }
}
