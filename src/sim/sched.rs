//! The simulation's event queue: events in simulated-millisecond order,
//! ties in the order they were pushed, so that a seed replays exactly.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

struct Queued<E> {
    at: u64,
    seq: u64,
    ev: E,
}

impl<E> PartialEq for Queued<E> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<E> Eq for Queued<E> {}
impl<E> PartialOrd for Queued<E> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<E> Ord for Queued<E> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

pub struct Sched<E> {
    seq: u64,
    queue: BinaryHeap<Reverse<Queued<E>>>,
}

impl<E> Default for Sched<E> {
    fn default() -> Self {
        Sched {
            seq: 0,
            queue: BinaryHeap::new(),
        }
    }
}

impl<E> Sched<E> {
    pub fn push(&mut self, at: u64, ev: E) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            ev,
        }));
    }

    /// The next event and its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        self.queue.pop().map(|Reverse(q)| (q.at, q.ev))
    }
}
