//! Workers shared by the runs of a server (`braid serve`): each run has a loop of its own,
//! and they draw slots from the same workers.
//!
//! Each worker's slots are one [`SlotPool`] that every run's loop takes from when it
//! assigns and gives back when the lease ends, so a worker never gets more attempts than
//! it registered slots for, whichever runs they belong to. [`Fairness`] caps each run at
//! its share of all slots while other runs have work waiting: a run that submitted first
//! does not keep the fleet to itself. Atomics only: the loops never wait on each other.

use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

/// One worker's slots, as all runs see them.
#[derive(Debug)]
pub struct SlotPool {
    total: usize,
    busy: AtomicUsize,
}

impl SlotPool {
    /// A worker with `total` slots, all free.
    pub fn new(total: u32) -> Self {
        SlotPool {
            total: total as usize,
            busy: AtomicUsize::new(0),
        }
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.total.saturating_sub(self.busy.load(Ordering::Acquire))
    }

    /// Takes a slot; false when none is free.
    pub fn take(&self) -> bool {
        self.busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |busy| {
                (busy < self.total).then_some(busy + 1)
            })
            .is_ok()
    }

    /// Gives a slot back.
    pub fn give(&self) {
        let _ = self
            .busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |busy| {
                busy.checked_sub(1)
            });
    }
}

/// How many slots each run may hold while others wait.
#[derive(Debug, Default)]
pub struct Fairness {
    /// Slots of every worker attached.
    slots: AtomicUsize,
    /// Each run's demand: attempts queued or running.
    demand: DashMap<String, usize>,
}

impl Fairness {
    /// A worker with `slots` slots joined (or, negative, left).
    pub fn add_slots(&self, slots: isize) {
        let _ = self
            .slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some(s.saturating_add_signed(slots))
            });
    }

    /// Says what run `run` wants now: attempts queued or running.
    pub fn set_demand(&self, run: &str, demand: usize) {
        if demand == 0 {
            self.demand.remove(run);
        } else if self.demand.get(run).is_none_or(|d| *d != demand) {
            self.demand.insert(run.to_owned(), demand);
        }
    }

    /// The most slots run `run` may hold: all of them when no other run wants any, else
    /// an even share (rounded up).
    pub fn cap(&self, run: &str) -> usize {
        let slots = self.slots.load(Ordering::Acquire).max(1);
        let others = self.demand.iter().filter(|d| d.key() != run).count();
        slots.div_ceil(others + 1)
    }

    /// Forgets a run that ended.
    pub fn forget(&self, run: &str) {
        self.demand.remove(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_never_lends_more_than_it_has() {
        let pool = SlotPool::new(2);
        assert!(pool.take() && pool.take());
        assert!(!pool.take());
        assert_eq!(pool.free(), 0);
        pool.give();
        assert_eq!(pool.free(), 1);
        pool.give();
        pool.give();
        assert_eq!(pool.free(), 2);
    }

    #[test]
    fn runs_with_work_share_the_slots() {
        let fair = Fairness::default();
        fair.add_slots(3);
        fair.set_demand("a", 10);
        assert_eq!(fair.cap("a"), 3);
        fair.set_demand("b", 4);
        assert_eq!(fair.cap("a"), 2);
        assert_eq!(fair.cap("b"), 2);
        fair.set_demand("b", 0);
        assert_eq!(fair.cap("a"), 3);
    }
}
