//! The core of the lazy filesystem, pure (no I/O of its own): one file's writes that have not
//! been fsynced yet, laid over the backing file's bytes.
//!
//! The backing file always holds exactly what was durable at the last sync (`durable_len`
//! bytes). On top of it:
//! - `extents`: bytes written since, non-overlapping, merged when adjacent (appends grow one
//!   extent);
//! - `len`: the file's size as the application sees it;
//! - `cut`: the smallest size the file was truncated to since the last sync: backing bytes at
//!   or past it are no longer part of the file (they read as zeros unless written again).
//!
//! [`Overlay::plan`] says what to do to the backing file on fsync, [`Overlay::synced`] records
//! that it was done, [`Overlay::drop_unsynced`] is the power cut.

use std::collections::BTreeMap;
use std::io;

#[derive(Clone, Debug, Default)]
pub struct Overlay {
    durable_len: u64,
    len: u64,
    cut: Option<u64>,
    extents: BTreeMap<u64, Vec<u8>>,
}

/// What an fsync does to the backing file, in this order.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan<'a> {
    /// Truncate the backing file to this size first (a truncation since the last sync).
    pub shrink_to: Option<u64>,
    /// Then write these bytes at these offsets.
    pub writes: Vec<(u64, &'a [u8])>,
    /// Then set the backing file's size to this (an extension past the last write).
    pub extend_to: Option<u64>,
}

impl Overlay {
    /// A file whose backing file holds `durable_len` bytes, nothing pending.
    pub fn new(durable_len: u64) -> Overlay {
        Overlay { durable_len, len: durable_len, cut: None, extents: BTreeMap::new() }
    }

    /// The file's size as the application sees it.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// The backing file's size (what a power cut returns to).
    pub fn durable_len(&self) -> u64 {
        self.durable_len
    }

    /// Bytes written and not yet synced.
    pub fn pending_bytes(&self) -> u64 {
        self.extents.values().map(|v| v.len() as u64).sum()
    }

    /// Nothing to sync: no pending bytes, no pending size change.
    pub fn is_clean(&self) -> bool {
        self.extents.is_empty() && self.cut.is_none() && self.len == self.durable_len
    }

    /// `data` written at `off` (the file grows to cover it; a gap reads as zeros).
    pub fn write(&mut self, off: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = off + data.len() as u64;
        // Extents overlapping [off, end): sorted and disjoint, so their ends are sorted too.
        let overlapping: Vec<u64> = self
            .extents
            .range(..end)
            .rev()
            .take_while(|(s, v)| **s + v.len() as u64 > off)
            .map(|(s, _)| *s)
            .collect();
        for s in overlapping {
            let mut v = self.extents.remove(&s).expect("listed");
            let v_end = s + v.len() as u64;
            if v_end > end {
                self.extents.insert(end, v[(end - s) as usize..].to_vec());
            }
            if s < off {
                v.truncate((off - s) as usize);
                self.extents.insert(s, v);
            }
        }
        // Merge with the neighbours that touch it, so that appends keep one extent.
        let before = self
            .extents
            .range(..off)
            .next_back()
            .filter(|(s, v)| **s + v.len() as u64 == off)
            .map(|(s, _)| *s);
        let (start, mut buf) = match before {
            Some(s) => {
                let mut v = self.extents.remove(&s).expect("listed");
                v.extend_from_slice(data);
                (s, v)
            }
            None => (off, data.to_vec()),
        };
        if let Some(next) = self.extents.remove(&end) {
            buf.extend_from_slice(&next);
        }
        self.extents.insert(start, buf);
        self.len = self.len.max(end);
    }

    /// The file truncated (or extended with zeros) to `size`.
    pub fn truncate(&mut self, size: u64) {
        if size < self.len {
            let gone: Vec<u64> = self.extents.range(size..).map(|(s, _)| *s).collect();
            for s in gone {
                self.extents.remove(&s);
            }
            if let Some((s, v)) = self.extents.range_mut(..size).next_back() {
                let keep = (size - *s) as usize;
                if v.len() > keep {
                    v.truncate(keep);
                }
            }
            self.cut = Some(self.cut.map_or(size, |c| c.min(size)));
        }
        self.len = size;
    }

    /// Reads up to `size` bytes at `off` (fewer at the end of the file). `backing` fills a buffer
    /// from the backing file at an offset (only below its durable size).
    pub fn read(
        &self,
        off: u64,
        size: usize,
        backing: impl FnOnce(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<Vec<u8>> {
        let end = self.len.min(off.saturating_add(size as u64));
        if off >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - off) as usize];
        let base_end = end.min(self.durable_len).min(self.cut.unwrap_or(u64::MAX));
        if off < base_end {
            backing(off, &mut buf[..(base_end - off) as usize])?;
        }
        // Extents that may overlap [off, end): the last one starting before `off`, and every
        // one starting in the range.
        let first = self.extents.range(..=off).next_back().map(|(s, _)| *s).unwrap_or(off);
        for (s, v) in self.extents.range(first..end) {
            let v_end = *s + v.len() as u64;
            let from = (*s).max(off);
            let to = v_end.min(end);
            if from < to {
                buf[(from - off) as usize..(to - off) as usize]
                    .copy_from_slice(&v[(from - s) as usize..(to - s) as usize]);
            }
        }
        Ok(buf)
    }

    /// What a sync must do to the backing file.
    pub fn plan(&self) -> Plan<'_> {
        let shrink_to = self.cut.filter(|c| *c < self.durable_len);
        let base = self.durable_len.min(self.cut.unwrap_or(u64::MAX));
        let written_end = self.extents.iter().next_back().map_or(0, |(s, v)| s + v.len() as u64);
        let after = base.max(written_end);
        Plan {
            shrink_to,
            writes: self.extents.iter().map(|(s, v)| (*s, v.as_slice())).collect(),
            extend_to: (self.len > after).then_some(self.len),
        }
    }

    /// The plan was carried out and the backing file synced: everything is durable now.
    pub fn synced(&mut self) {
        self.durable_len = self.len;
        self.cut = None;
        self.extents.clear();
    }

    /// The power cut: every unsynced write and size change is gone. Returns the bytes dropped.
    pub fn drop_unsynced(&mut self) -> u64 {
        let dropped = self.pending_bytes();
        self.len = self.durable_len;
        self.cut = None;
        self.extents.clear();
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A backing "file" in memory, and the plan applied to it.
    fn apply(backing: &mut Vec<u8>, plan: &Plan<'_>) {
        if let Some(n) = plan.shrink_to {
            backing.truncate(n as usize);
        }
        for (off, data) in &plan.writes {
            let end = *off as usize + data.len();
            if backing.len() < end {
                backing.resize(end, 0);
            }
            backing[*off as usize..end].copy_from_slice(data);
        }
        if let Some(n) = plan.extend_to {
            backing.resize(n as usize, 0);
        }
    }

    fn read_all(o: &Overlay, backing: &[u8]) -> Vec<u8> {
        o.read(0, usize::MAX / 2, |off, buf| {
            buf.copy_from_slice(&backing[off as usize..off as usize + buf.len()]);
            Ok(())
        })
        .unwrap()
    }

    fn sync(o: &mut Overlay, backing: &mut Vec<u8>) {
        let plan = o.plan();
        apply(backing, &plan);
        o.synced();
    }

    #[test]
    fn read_after_write_sees_pending_bytes_over_the_backing_file() {
        let backing = b"hello world".to_vec();
        let mut o = Overlay::new(backing.len() as u64);
        o.write(6, b"WORLD!!");
        assert_eq!(read_all(&o, &backing), b"hello WORLD!!");
        assert_eq!(o.size(), 13);
        // A read in the middle, crossing the backing bytes and the extent.
        let mid = o.read(4, 4, |off, buf| {
            buf.copy_from_slice(&backing[off as usize..off as usize + buf.len()]);
            Ok(())
        });
        assert_eq!(mid.unwrap(), b"o WO");
        assert_eq!(o.pending_bytes(), 7);
    }

    #[test]
    fn fsync_persists_and_a_cut_afterwards_keeps_it() {
        let mut backing = Vec::new();
        let mut o = Overlay::new(0);
        o.write(0, b"abc");
        o.write(3, b"def");
        assert_eq!(o.plan().writes.len(), 1, "appends merge into one extent");
        sync(&mut o, &mut backing);
        assert_eq!(backing, b"abcdef");
        assert!(o.is_clean());
        assert_eq!(o.drop_unsynced(), 0);
        assert_eq!(read_all(&o, &backing), b"abcdef");
    }

    #[test]
    fn a_cut_drops_unsynced_writes_and_size_changes() {
        let mut backing = Vec::new();
        let mut o = Overlay::new(0);
        o.write(0, b"synced");
        sync(&mut o, &mut backing);
        o.write(6, b"-lost");
        o.write(0, b"S");
        assert_eq!(read_all(&o, &backing), b"Synced-lost");
        assert_eq!(o.drop_unsynced(), 6);
        assert_eq!(o.size(), 6);
        assert_eq!(read_all(&o, &backing), b"synced");
        // A truncation is lost too.
        o.truncate(2);
        assert_eq!(read_all(&o, &backing), b"sy");
        o.drop_unsynced();
        assert_eq!(read_all(&o, &backing), b"synced");
    }

    #[test]
    fn truncate_then_extend_reads_zeros_not_the_old_bytes() {
        let mut backing = b"0123456789".to_vec();
        let mut o = Overlay::new(10);
        o.truncate(4);
        o.truncate(8);
        assert_eq!(read_all(&o, &backing), b"0123\0\0\0\0");
        o.write(6, b"xy");
        assert_eq!(read_all(&o, &backing), b"0123\0\0xy");
        sync(&mut o, &mut backing);
        assert_eq!(backing, b"0123\0\0xy");
        // Extension alone (no write past it) is planned as a size change.
        o.truncate(12);
        let plan = o.plan();
        assert_eq!(plan, Plan { shrink_to: None, writes: vec![], extend_to: Some(12) });
        sync(&mut o, &mut backing);
        assert_eq!(backing.len(), 12);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Write(u64, Vec<u8>),
        Truncate(u64),
        Read(u64, usize),
        Sync,
        Cut,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..64, proptest::collection::vec(any::<u8>(), 1..24))
                .prop_map(|(o, d)| Op::Write(o, d)),
            1 => (0u64..80).prop_map(Op::Truncate),
            3 => (0u64..90, 0usize..40).prop_map(|(o, n)| Op::Read(o, n)),
            1 => Just(Op::Sync),
            1 => Just(Op::Cut),
        ]
    }

    proptest! {
        /// Against a model of two plain byte vectors: what the application sees, and what was
        /// durable at the last sync.
        #[test]
        fn behaves_like_a_file_that_forgets_everything_since_its_last_fsync(
            initial in proptest::collection::vec(any::<u8>(), 0..40),
            ops in proptest::collection::vec(op(), 1..60),
        ) {
            let mut backing = initial.clone();
            let mut durable = initial.clone();
            let mut current = initial.clone();
            let mut o = Overlay::new(initial.len() as u64);
            for op in ops {
                match op {
                    Op::Write(off, data) => {
                        let end = off as usize + data.len();
                        if current.len() < end {
                            current.resize(end, 0);
                        }
                        current[off as usize..end].copy_from_slice(&data);
                        o.write(off, &data);
                    }
                    Op::Truncate(n) => {
                        current.resize(n as usize, 0);
                        o.truncate(n);
                    }
                    Op::Read(off, n) => {
                        let got = o.read(off, n, |at, buf| {
                            buf.copy_from_slice(&backing[at as usize..at as usize + buf.len()]);
                            Ok(())
                        }).unwrap();
                        let from = (off as usize).min(current.len());
                        let to = (off as usize + n).min(current.len());
                        prop_assert_eq!(got, current[from..to].to_vec());
                    }
                    Op::Sync => {
                        sync(&mut o, &mut backing);
                        durable = current.clone();
                        prop_assert_eq!(&backing, &durable);
                    }
                    Op::Cut => {
                        o.drop_unsynced();
                        current = durable.clone();
                    }
                }
                prop_assert_eq!(o.size(), current.len() as u64);
                prop_assert_eq!(&backing, &durable, "the backing file changes only on sync");
                prop_assert_eq!(read_all(&o, &backing), current.clone());
            }
        }
    }
}
