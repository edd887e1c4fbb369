//! Builders that keep the checkers' test histories readable.

use crate::history::{AttemptView, Call, JobView, Op, OpType, SideEffect, TaskView};

/// A history under construction: ops are added with explicit times and sorted by time (stably)
/// when built, so a test can write each op's invoke and completion together.
#[derive(Default)]
pub struct H {
    ops: Vec<Op>,
}

fn s(x: &str) -> String {
    x.to_string()
}

impl H {
    pub fn new() -> Self {
        H::default()
    }
    pub fn push(&mut self, process: u64, kind: OpType, call: Call, t: u64) -> &mut Self {
        self.ops.push(Op { index: 0, time_ns: t, process, kind, call });
        self
    }
    /// An invocation that never completes.
    pub fn open(&mut self, process: u64, call: Call, t: u64) -> &mut Self {
        self.push(process, OpType::Invoke, call, t)
    }
    fn pair(
        &mut self,
        p: u64,
        invoke: Call,
        t0: u64,
        kind: OpType,
        done: Call,
        t1: u64,
    ) -> &mut Self {
        self.push(p, OpType::Invoke, invoke, t0).push(p, kind, done, t1)
    }
    pub fn submit(&mut self, p: u64, key: &str, t0: u64, t1: u64, id: &str) -> &mut Self {
        let inv = Call::Submit { key: s(key), job_id: None };
        self.pair(p, inv, t0, OpType::Ok, Call::Submit { key: s(key), job_id: Some(s(id)) }, t1)
    }
    /// A submit that timed out (`info`, completion recorded right after the invoke).
    pub fn submit_info(&mut self, p: u64, key: &str, t0: u64) -> &mut Self {
        let c = Call::Submit { key: s(key), job_id: None };
        self.pair(p, c.clone(), t0, OpType::Info, c, t0 + 1)
    }
    pub fn submit_fail(&mut self, p: u64, key: &str, t0: u64, t1: u64) -> &mut Self {
        let c = Call::Submit { key: s(key), job_id: None };
        self.pair(p, c.clone(), t0, OpType::Fail, c, t1)
    }
    pub fn read(
        &mut self,
        p: u64,
        key: &str,
        id: &str,
        t0: u64,
        t1: u64,
        state: &str,
    ) -> &mut Self {
        let inv = Call::Read { key: s(key), job_id: s(id), state: None };
        self.pair(
            p,
            inv,
            t0,
            OpType::Ok,
            Call::Read { key: s(key), job_id: s(id), state: Some(s(state)) },
            t1,
        )
    }
    pub fn cancel(
        &mut self,
        p: u64,
        key: &str,
        id: &str,
        t0: u64,
        t1: u64,
        state: &str,
    ) -> &mut Self {
        let inv = Call::Cancel { key: s(key), job_id: s(id), state: None };
        self.pair(
            p,
            inv,
            t0,
            OpType::Ok,
            Call::Cancel { key: s(key), job_id: s(id), state: Some(s(state)) },
            t1,
        )
    }
    pub fn cancel_info(&mut self, p: u64, key: &str, id: &str, t0: u64) -> &mut Self {
        let c = Call::Cancel { key: s(key), job_id: s(id), state: None };
        self.pair(p, c.clone(), t0, OpType::Info, c, t0 + 1)
    }
    /// An `ok` final read recorded as invoke (at `t`) + ok (at `t + 1`), process 1000.
    pub fn final_read(&mut self, t: u64, jobs: Vec<JobView>) -> &mut Self {
        self.pair(
            1000,
            Call::FinalRead { jobs: vec![] },
            t,
            OpType::Ok,
            Call::FinalRead { jobs },
            t + 1,
        )
    }
    /// A bare `ok` leader poll of `node` at `t` (process 2000 + node).
    pub fn poll(&mut self, t: u64, node: u64, term: u64, leader: bool) -> &mut Self {
        self.push(2000 + node, OpType::Ok, Call::LeaderPoll { node, term, leader }, t)
    }
    pub fn build(&self) -> Vec<Op> {
        let mut ops = self.ops.clone();
        ops.sort_by_key(|o| o.time_ns);
        for (i, o) in ops.iter_mut().enumerate() {
            o.index = i as u64;
        }
        ops
    }
}

pub fn job(id: &str, key: &str, state: &str, tasks: Vec<TaskView>) -> JobView {
    JobView { id: s(id), key: s(key), state: s(state), tasks, deleted: None }
}

pub fn task(index: u32, state: &str, attempts: Vec<AttemptView>) -> TaskView {
    TaskView { index, state: s(state), attempts }
}

pub fn att(number: u32, token: u64, state: &str) -> AttemptView {
    AttemptView { number, token, executor: format!("e{}", token % 2), state: s(state) }
}

pub fn se(event: &str, job: &str, task: u32, attempt: u32, token: u64, t: u64) -> SideEffect {
    SideEffect { event: s(event), job_id: s(job), task, attempt, token, time_ns: t }
}

/// True if some detail contains `needle`.
pub fn mentions(v: &super::Verdict, needle: &str) -> bool {
    v.details.iter().any(|d| d.contains(needle))
}
