//! The relay's reorder window: responses from several agents arrive interleaved
//! and slightly out of order; they leave in time order once the window says no
//! older one can still come (Hubble Relay's sort buffer: a maximum length and a
//! drain timeout).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use hubble_proto::observer::GetFlowsResponse;

/// A bounded priority queue of responses ordered by their time.
#[derive(Debug)]
pub struct SortBuffer {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    max_len: usize,
    window: Duration,
}

#[derive(Debug)]
struct Entry {
    time: (i64, i32),
    seq: u64,
    arrived: Instant,
    response: GetFlowsResponse,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.time, self.seq).cmp(&(other.time, other.seq))
    }
}

impl SortBuffer {
    /// A response leaves when more than `max_len` wait, or when it has waited
    /// `window` (`Duration::MAX`: only by length, or at [`SortBuffer::drain`]).
    pub fn new(max_len: usize, window: Duration) -> Self {
        Self {
            heap: BinaryHeap::new(),
            seq: 0,
            max_len: max_len.max(1),
            window,
        }
    }

    pub fn push(&mut self, response: GetFlowsResponse, now: Instant) {
        let time = response
            .time
            .map(|t| (t.seconds, t.nanos))
            .unwrap_or_default();
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            time,
            seq: self.seq,
            arrived: now,
            response,
        }));
    }

    /// The oldest response, if it may leave now.
    pub fn pop_ready(&mut self, now: Instant) -> Option<GetFlowsResponse> {
        let Reverse(top) = self.heap.peek()?;
        let waited = top
            .arrived
            .checked_add(self.window)
            .is_some_and(|t| t <= now);
        if self.heap.len() > self.max_len || waited {
            return self.heap.pop().map(|Reverse(e)| e.response);
        }
        None
    }

    /// When the oldest response may leave at the latest (`None`: never by time,
    /// e.g. with an unbounded window).
    pub fn deadline(&self) -> Option<Instant> {
        self.heap
            .peek()
            .and_then(|Reverse(e)| e.arrived.checked_add(self.window))
    }

    /// Everything, oldest first (the streams have ended).
    pub fn drain(&mut self) -> Vec<GetFlowsResponse> {
        let mut out = Vec::with_capacity(self.heap.len());
        while let Some(Reverse(e)) = self.heap.pop() {
            out.push(e.response);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use hubble_proto::Timestamp;

    use super::*;

    fn at(seconds: i64, node: &str) -> GetFlowsResponse {
        GetFlowsResponse {
            node_name: node.to_string(),
            time: Some(Timestamp { seconds, nanos: 0 }),
            response_types: None,
        }
    }

    fn names(rs: &[GetFlowsResponse]) -> Vec<String> {
        rs.iter()
            .map(|r| format!("{}@{}", r.node_name, r.time.map_or(0, |t| t.seconds)))
            .collect()
    }

    #[test]
    fn late_arrivals_inside_the_window_are_put_in_order() {
        let t0 = Instant::now();
        let mut buf = SortBuffer::new(100, Duration::from_secs(1));
        buf.push(at(5, "a"), t0);
        buf.push(at(3, "b"), t0);
        assert!(buf.pop_ready(t0).is_none(), "the window has not passed");
        buf.push(at(4, "a"), t0 + Duration::from_millis(500));
        let mut out = Vec::new();
        let mut release = |at: Duration| {
            while let Some(r) = buf.pop_ready(t0 + at) {
                out.push(r);
            }
        };
        // b@3 has waited its second; a@4 (the oldest now) has not.
        release(Duration::from_millis(1000));
        release(Duration::from_millis(1500));
        assert_eq!(names(&out), ["b@3", "a@4", "a@5"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_full_buffer_releases_the_oldest_at_once() {
        let t0 = Instant::now();
        let mut buf = SortBuffer::new(2, Duration::from_secs(60));
        for s in [9, 7, 8] {
            buf.push(at(s, "n"), t0);
        }
        assert_eq!(
            names(&[buf.pop_ready(t0).expect("over the length")]),
            ["n@7"]
        );
        assert!(buf.pop_ready(t0).is_none());
        assert_eq!(names(&buf.drain()), ["n@8", "n@9"]);
    }

    #[test]
    fn equal_times_keep_their_arrival_order() {
        let t0 = Instant::now();
        let mut buf = SortBuffer::new(10, Duration::ZERO);
        buf.push(at(1, "first"), t0);
        buf.push(at(1, "second"), t0);
        assert_eq!(names(&buf.drain()), ["first@1", "second@1"]);
        assert_eq!(buf.deadline(), None);
    }
}
