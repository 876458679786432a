//! The queue of attempts waiting for a slot, highest task first.
//!
//! A task's height is the longest chain of tasks that wait on it ([`crate::dag::Dag::heights`]):
//! when slots are scarce, starting the attempts on the longest chains first is what keeps a
//! run's end near its critical path. Among attempts of equal height the queue is first in,
//! first out, and `push_front` puts an attempt (a lost one, a baseline job) ahead of the
//! others of its height.
//!
//! A task whose several deps just ended is not queued at once: their winners are merged
//! into its base first, off the loop. Its attempts are promised meanwhile, and a slot that frees up is kept for them
//! rather than given to an attempt of a lower task: otherwise the freed slot goes to
//! whatever waits, and the next task of the longest chain waits for the next slot to free
//! up (measured on `cargo run --release -p braid-bench -- makespan`: most of the time a
//! run spent beyond its critical path).

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

/// Attempts (task index, attempt index) waiting to be assigned.
#[derive(Debug, Default)]
pub struct Queue {
    heights: Vec<usize>,
    by_height: BTreeMap<Reverse<usize>, VecDeque<(usize, usize)>>,
    len: usize,
    /// Attempts promised per task whose base is being merged.
    promised: BTreeMap<usize, usize>,
}

impl Queue {
    /// An empty queue for tasks of these heights.
    pub fn new(heights: Vec<usize>) -> Self {
        Queue {
            heights,
            by_height: BTreeMap::new(),
            len: 0,
            promised: BTreeMap::new(),
        }
    }

    fn height(&self, task: usize) -> usize {
        self.heights.get(task).copied().unwrap_or(0)
    }

    fn lane(&mut self, task: usize) -> &mut VecDeque<(usize, usize)> {
        let height = self.height(task);
        self.by_height.entry(Reverse(height)).or_default()
    }

    /// Queues an attempt behind the others of its task's height.
    pub fn push_back(&mut self, item: (usize, usize)) {
        self.lane(item.0).push_back(item);
        self.len += 1;
    }

    /// Queues an attempt ahead of the others of its task's height.
    pub fn push_front(&mut self, item: (usize, usize)) {
        self.lane(item.0).push_front(item);
        self.len += 1;
    }

    /// Takes the next attempt: the first of the highest tasks.
    pub fn pop_front(&mut self) -> Option<(usize, usize)> {
        let mut lane = self.by_height.first_entry()?;
        let item = lane.get_mut().pop_front();
        if lane.get().is_empty() {
            lane.remove();
        }
        self.len -= usize::from(item.is_some());
        item
    }

    /// Keeps only the attempts `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&(usize, usize)) -> bool) {
        for lane in self.by_height.values_mut() {
            lane.retain(&mut keep);
        }
        self.by_height.retain(|_, lane| !lane.is_empty());
        self.len = self.by_height.values().map(VecDeque::len).sum();
    }

    /// Every attempt waiting, in no particular order.
    pub fn items(&self) -> Vec<(usize, usize)> {
        self.by_height.values().flatten().copied().collect()
    }

    /// How many attempts wait.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no attempt waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Promises `attempts` attempts of `task`, whose base is being merged.
    pub fn promise(&mut self, task: usize, attempts: usize) {
        if attempts > 0 {
            self.promised.insert(task, attempts);
        }
    }

    /// Withdraws the promise for `task`: its base is merged (and its attempts queued), or
    /// it ended without one.
    pub fn withdraw(&mut self, task: usize) {
        self.promised.remove(&task);
    }

    /// Keeps a slot for what may follow `task`, whose result is being imported: its
    /// dependents start only once it is in, and the slot its attempt just freed would
    /// otherwise go to a lower task first (measured: the next task of a chain then waited
    /// for another slot, a median 24 ms on `braid-bench makespan`).
    pub fn hold(&mut self, task: usize) {
        *self.promised.entry(task).or_default() += 1;
    }

    /// Gives back a slot [`Queue::hold`] kept.
    pub fn unhold(&mut self, task: usize) {
        if let Some(n) = self.promised.get_mut(&task) {
            *n -= 1;
            if *n == 0 {
                self.promised.remove(&task);
            }
        }
    }

    /// Withdraws every promise.
    pub fn withdraw_all(&mut self) {
        self.promised.clear();
    }

    /// Whether the next attempt may have one of `free` slots: not while the promised
    /// attempts of higher tasks would need them all.
    pub fn may_take(&self, free: usize) -> bool {
        let Some((Reverse(next), _)) = self.by_height.first_key_value() else {
            return false;
        };
        let held: usize = self
            .promised
            .iter()
            .filter(|(task, _)| self.height(**task) > *next)
            .map(|(_, n)| n)
            .sum();
        free > held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_task_goes_first_and_ties_keep_their_order() {
        // Task 0 heads a chain of three, task 1 stands alone, task 2 ends task 0's chain.
        let mut queue = Queue::new(vec![3, 1, 1]);
        queue.push_back((1, 0));
        queue.push_back((2, 0));
        queue.push_back((0, 0));
        queue.push_back((0, 1));
        queue.push_front((2, 1));
        queue.retain(|&(t, a)| (t, a) != (0, 1));
        let order: Vec<_> = std::iter::from_fn(|| queue.pop_front()).collect();
        assert_eq!(order, vec![(0, 0), (2, 1), (1, 0), (2, 0)]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_slot_is_kept_while_a_higher_tasks_result_is_imported() {
        // Task 0 (height 2) has two results being imported; task 1 (height 1) waits.
        let mut queue = Queue::new(vec![2, 1]);
        queue.push_back((1, 0));
        queue.hold(0);
        queue.hold(0);
        assert!(!queue.may_take(2), "both free slots are kept");
        assert!(queue.may_take(3));
        queue.unhold(0);
        assert!(!queue.may_take(1));
        assert!(queue.may_take(2));
        queue.unhold(0);
        assert!(queue.may_take(1), "nothing is kept once both are in");
        queue.unhold(0);
        assert!(
            queue.may_take(1),
            "giving back more than was kept changes nothing"
        );
    }

    #[test]
    fn slots_are_kept_for_promised_attempts_of_higher_tasks() {
        // Task 0 (height 3) is being merged, with two attempts; task 1 (height 1) waits.
        let mut queue = Queue::new(vec![3, 1, 5]);
        queue.push_back((1, 0));
        assert!(queue.may_take(1));
        queue.promise(0, 2);
        assert!(!queue.may_take(1));
        assert!(!queue.may_take(2));
        assert!(queue.may_take(3), "more free slots than promised");
        // A promise of a lower task holds nothing back from a higher one.
        queue.push_back((2, 0));
        assert!(queue.may_take(1));
        assert_eq!(queue.pop_front(), Some((2, 0)));
        assert!(!queue.may_take(1));
        queue.withdraw(0);
        assert!(queue.may_take(1));
        queue.promise(0, 1);
        queue.withdraw_all();
        assert!(queue.may_take(1));
        assert_eq!(queue.pop_front(), Some((1, 0)));
        assert!(!queue.may_take(5), "nothing waits");
    }
}
