//! Partitioning the 128-bit UUID space among the tasks of a job (`TRIAD_RANGE_START`,
//! `TRIAD_RANGE_END`), so a job over a UUID-keyed data set splits work without coordination.

use uuid::Uuid;

/// The `index`-th of `count` contiguous inclusive ranges that tile `0..=u128::MAX` exactly, in
/// order; sizes differ by at most one (the first `2^128 mod count` ranges are one larger).
/// Never panics: `count` 0 is treated as 1, and `index` is clamped to `count - 1`.
pub fn task_range(index: u32, count: u32) -> (u128, u128) {
    let n = u128::from(count.max(1));
    let i = u128::from(index).min(n - 1);
    if n == 1 {
        return (0, u128::MAX);
    }
    // 2^128 = q*n + r with 0 <= r < n, computed without 2^128 (it does not fit): from
    // u128::MAX = q0*n + r0 we get 2^128 = q0*n + (r0 + 1), and r0 + 1 may equal n.
    let (mut q, mut r) = (u128::MAX / n, u128::MAX % n + 1);
    if r == n {
        q += 1; // cannot overflow: n >= 2 so q0 < u128::MAX
        r = 0;
    }
    let start = i * q + i.min(r);
    // Written as start + (len - 1) so the last range ends at u128::MAX without overflowing.
    let end = start + (q - 1) + u128::from(i < r);
    (start, end)
}

/// A point of the UUID space in canonical hyphenated form.
pub fn range_uuid(x: u128) -> String {
    Uuid::from_u128(x).to_string()
}

/// [`task_range`] as UUID strings, the form given to task attempts.
pub fn task_range_uuids(index: u32, count: u32) -> (String, String) {
    let (start, end) = task_range(index, count);
    (range_uuid(start), range_uuid(end))
}
