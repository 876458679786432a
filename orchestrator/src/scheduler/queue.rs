//! The queue of attempts waiting for a slot, highest task first.
//!
//! A task's height is the longest chain of tasks that wait on it ([`crate::dag::Dag::heights`]):
//! when slots are scarce, starting the attempts on the longest chains first is what keeps a
//! run's end near its critical path. Among attempts of equal height the queue is first in,
//! first out, and `push_front` puts an attempt (a lost one, a baseline job) ahead of the
//! others of its height.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

/// Attempts (task index, attempt index) waiting to be assigned.
#[derive(Debug, Default)]
pub struct Queue {
    heights: Vec<usize>,
    by_height: BTreeMap<Reverse<usize>, VecDeque<(usize, usize)>>,
    len: usize,
}

impl Queue {
    /// An empty queue for tasks of these heights.
    pub fn new(heights: Vec<usize>) -> Self {
        Queue {
            heights,
            by_height: BTreeMap::new(),
            len: 0,
        }
    }

    fn lane(&mut self, task: usize) -> &mut VecDeque<(usize, usize)> {
        let height = self.heights.get(task).copied().unwrap_or(0);
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

    /// Whether no attempt waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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
}
