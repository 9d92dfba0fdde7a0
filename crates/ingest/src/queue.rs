//! The ingest queue: bounded, and shared fairly between services.
//!
//! One service in an outage may fill the whole queue (its reports must
//! land: a real outage is exactly such a flood), but it cannot keep the
//! others out. When the queue is full, a report for a service with fewer
//! waiting reports than the longest queue pushes out the newest report of
//! that longest queue (longest-queue drop, whose requester is answered
//! 503), and batches are taken round-robin across services, so a quiet
//! service's reports never wait behind a flood. The total never exceeds
//! the capacity.

use std::collections::{HashMap, VecDeque};

/// Why a report did not enter the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Full, and its service already holds as many places as the longest queue.
    Full,
    /// Closed for shutdown.
    Closed,
}

/// Reports waiting, per service, with the services that have any in
/// round-robin order. Pure data: the batcher wraps it in a lock.
#[derive(Debug)]
pub struct FairQueue<T> {
    queues: HashMap<i64, VecDeque<T>>,
    /// Services with waiting reports, each once, in the order batches visit them.
    ring: VecDeque<i64>,
    len: usize,
    capacity: usize,
    closed: bool,
}

impl<T> FairQueue<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            queues: HashMap::new(),
            ring: VecDeque::new(),
            len: 0,
            capacity: capacity.max(1),
            closed: false,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Refuses every later push; what is queued can still be taken.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Queues `item` for `service`. When full, the newest item of the
    /// longest other queue is pushed out and returned (to be refused), if
    /// that queue is longer than this service's would become.
    pub fn push(&mut self, service: i64, item: T) -> Result<Option<T>, (Refused, T)> {
        if self.closed {
            return Err((Refused::Closed, item));
        }
        let mut shed = None;
        if self.len >= self.capacity {
            let mine = self.queues.get(&service).map_or(0, VecDeque::len);
            let longest = self
                .queues
                .iter()
                .filter(|(s, _)| **s != service)
                .max_by_key(|(_, q)| q.len())
                .map(|(s, q)| (*s, q.len()));
            match longest {
                Some((victim, n)) if n > mine + 1 => {
                    shed = self.pop_back(victim);
                }
                _ => return Err((Refused::Full, item)),
            }
        }
        let q = self.queues.entry(service).or_default();
        if q.is_empty() {
            self.ring.push_back(service);
        }
        q.push_back(item);
        self.len += 1;
        Ok(shed)
    }

    fn pop_back(&mut self, service: i64) -> Option<T> {
        let q = self.queues.get_mut(&service)?;
        let item = q.pop_back()?;
        self.len -= 1;
        if q.is_empty() {
            self.queues.remove(&service);
            self.ring.retain(|s| *s != service);
        }
        Some(item)
    }

    /// Takes up to `max` items, visiting services round-robin: each service
    /// in turn gives an equal share of what is left of the batch (at least
    /// one), oldest first, and goes to the back of the ring if it has more.
    pub fn take(&mut self, max: usize, out: &mut Vec<T>) {
        while out.len() < max {
            let Some(service) = self.ring.pop_front() else {
                return;
            };
            let share = ((max - out.len()) / (self.ring.len() + 1)).max(1);
            let Some(q) = self.queues.get_mut(&service) else {
                continue;
            };
            let n = share.min(q.len());
            out.extend(q.drain(..n));
            self.len -= n;
            if q.is_empty() {
                self.queues.remove(&service);
            } else {
                self.ring.push_back(service);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut FairQueue<(i64, u32)>, max: usize) -> Vec<(i64, u32)> {
        let mut out = Vec::new();
        q.take(max, &mut out);
        out
    }

    #[test]
    fn one_service_alone_may_fill_the_whole_queue_and_no_more() {
        let mut q = FairQueue::new(5);
        for i in 0..5 {
            assert!(matches!(q.push(1, (1, i)), Ok(None)));
        }
        assert_eq!(q.push(1, (1, 5)).unwrap_err().0, Refused::Full);
        assert_eq!(q.len(), 5);
        assert_eq!(
            drain(&mut q, 10),
            (0..5).map(|i| (1, i)).collect::<Vec<_>>()
        );
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_queue_pushes_out_the_newest_of_the_flood_for_another_service() {
        let mut q = FairQueue::new(4);
        for i in 0..4 {
            q.push(1, (1, i)).unwrap();
        }
        // Service 2 gets in; the flood's newest report is pushed out.
        assert_eq!(q.push(2, (2, 0)).unwrap(), Some((1, 3)));
        assert_eq!(q.push(2, (2, 1)).unwrap(), Some((1, 2)));
        // Now both hold two: nobody is longer, so a third for 2 is refused.
        assert_eq!(q.push(2, (2, 2)).unwrap_err().0, Refused::Full);
        assert_eq!(q.push(1, (1, 9)).unwrap_err().0, Refused::Full);
        assert_eq!(q.len(), 4);
    }

    #[test]
    fn batches_visit_services_round_robin_oldest_first() {
        let mut q = FairQueue::new(100);
        for i in 0..10 {
            q.push(1, (1, i)).unwrap();
        }
        q.push(2, (2, 0)).unwrap();
        q.push(3, (3, 0)).unwrap();
        // A batch of 6 over three services: the two quiet ones are in it.
        let batch = drain(&mut q, 6);
        assert_eq!(batch.len(), 6);
        assert!(
            batch.contains(&(2, 0)) && batch.contains(&(3, 0)),
            "{batch:?}"
        );
        let flood: Vec<u32> = batch.iter().filter(|(s, _)| *s == 1).map(|x| x.1).collect();
        assert_eq!(flood, vec![0, 1, 2, 3]);
        assert_eq!(q.len(), 6);
        assert_eq!(drain(&mut q, 100).len(), 6);
        assert!(q.is_empty());
    }

    #[test]
    fn closed_queue_refuses_but_still_hands_out_what_it_holds() {
        let mut q = FairQueue::new(3);
        q.push(1, (1, 0)).unwrap();
        q.close();
        assert_eq!(q.push(2, (2, 0)).unwrap_err().0, Refused::Closed);
        assert_eq!(drain(&mut q, 10), vec![(1, 0)]);
    }

    proptest::proptest! {
        /// Whatever the arrivals and batch sizes: the total never exceeds
        /// the capacity, nothing is lost or duplicated (every item is
        /// either taken, pushed out, refused or still queued), and each
        /// service's items come out in the order they went in.
        #[test]
        fn bounded_lossless_and_in_order(
            capacity in 1usize..20,
            ops in proptest::collection::vec((0i64..4, 0usize..8), 1..200),
        ) {
            let mut q = FairQueue::new(capacity);
            let mut seen = std::collections::HashSet::new();
            let mut last: HashMap<i64, u32> = HashMap::new();
            let mut accounted = 0usize;
            for (n, (service, take)) in ops.into_iter().enumerate() {
                let id = n as u32;
                match q.push(service, (service, id)) {
                    Ok(Some(shed)) => { accounted += 1; proptest::prop_assert!(seen.insert(shed)); }
                    Ok(None) => {}
                    Err((_, item)) => { accounted += 1; proptest::prop_assert!(seen.insert(item)); }
                }
                proptest::prop_assert!(q.len() <= capacity);
                let mut out = Vec::new();
                q.take(take, &mut out);
                proptest::prop_assert!(out.len() <= take);
                for item in out {
                    accounted += 1;
                    proptest::prop_assert!(seen.insert(item));
                    if let Some(prev) = last.insert(item.0, item.1) {
                        proptest::prop_assert!(prev < item.1);
                    }
                }
                proptest::prop_assert_eq!(accounted + q.len(), n + 1);
            }
        }
    }
}
