//! The task graph: who depends on whom, in which order tasks can run and be integrated, and
//! where the cycles are.
//!
//! Invariant: pure; no I/O. Task indices are plan order, and every order this module gives
//! breaks ties by plan order, so runs and reports are deterministic.

use std::collections::{BTreeMap, HashMap, VecDeque};

use petgraph::Direction;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::plan::Task;

/// The dependency graph of a plan's tasks. An edge runs from a dependency to its dependent.
#[derive(Debug, Clone)]
pub struct Dag {
    graph: DiGraph<usize, ()>,
}

impl Dag {
    /// The graph of `tasks`, whose deps must name tasks of the list (as a checked plan's do).
    pub fn new(tasks: &[Task]) -> Self {
        let mut graph = DiGraph::with_capacity(tasks.len(), tasks.len());
        let index: HashMap<&str, NodeIndex> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), graph.add_node(i)))
            .collect();
        for (i, task) in tasks.iter().enumerate() {
            for dep in &task.deps {
                if let Some(&from) = index.get(dep.as_str()) {
                    graph.add_edge(from, NodeIndex::new(i), ());
                }
            }
        }
        Dag { graph }
    }

    /// The tasks `task` depends on directly, in plan order.
    pub fn deps(&self, task: usize) -> Vec<usize> {
        self.neighbours(task, Direction::Incoming)
    }

    /// The tasks that depend on `task` directly, in plan order.
    pub fn dependents(&self, task: usize) -> Vec<usize> {
        self.neighbours(task, Direction::Outgoing)
    }

    fn neighbours(&self, task: usize, direction: Direction) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .graph
            .edges_directed(NodeIndex::new(task), direction)
            .map(|e| match direction {
                Direction::Incoming => e.source().index(),
                Direction::Outgoing => e.target().index(),
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Every task that depends on `task`, directly or not, in plan order.
    pub fn downstream(&self, task: usize) -> Vec<usize> {
        let seen = self.reachable(task, Direction::Outgoing);
        (0..seen.len()).filter(|&t| seen[t]).collect()
    }

    /// Whether each task is ordered against `task` by the DAG: `task` depends on it, or it
    /// depends on `task`, directly or not. `task` itself is not.
    pub fn related(&self, task: usize) -> Vec<bool> {
        let mut related = self.reachable(task, Direction::Outgoing);
        for (t, up) in self
            .reachable(task, Direction::Incoming)
            .into_iter()
            .enumerate()
        {
            related[t] |= up;
        }
        related
    }

    /// Which tasks can be reached from `task` along edges in `direction`.
    fn reachable(&self, task: usize, direction: Direction) -> Vec<bool> {
        let mut seen = vec![false; self.graph.node_count()];
        let mut queue = VecDeque::from([task]);
        while let Some(t) = queue.pop_front() {
            for next in self.neighbours(t, direction) {
                if !seen[next] {
                    seen[next] = true;
                    queue.push_back(next);
                }
            }
        }
        seen
    }

    /// The tasks in layers: a task's layer is one more than the deepest of its deps.
    pub fn layers(&self) -> Vec<Vec<usize>> {
        let order = self.order();
        let mut depth = vec![0usize; order.len()];
        for &t in &order {
            depth[t] = self
                .deps(t)
                .iter()
                .map(|&d| depth[d] + 1)
                .max()
                .unwrap_or(0);
        }
        let mut layers: Vec<Vec<usize>> = Vec::new();
        for t in 0..order.len() {
            if layers.len() <= depth[t] {
                layers.resize(depth[t] + 1, Vec::new());
            }
            layers[depth[t]].push(t);
        }
        layers
    }

    /// Dependency order: every task after its deps; among tasks whose deps are all placed,
    /// the earliest in plan order comes first.
    pub fn order(&self) -> Vec<usize> {
        let n = self.graph.node_count();
        let mut waiting: Vec<usize> = (0..n).map(|t| self.deps(t).len()).collect();
        let mut ready: std::collections::BTreeSet<usize> =
            (0..n).filter(|&t| waiting[t] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(t) = ready.pop_first() {
            order.push(t);
            for next in self.dependents(t) {
                waiting[next] -= 1;
                if waiting[next] == 0 {
                    ready.insert(next);
                }
            }
        }
        order
    }

    /// Each task's height: the number of tasks on the longest chain from it to a task
    /// nothing depends on, itself included. A free slot goes to the highest first, since
    /// the longest chains decide when the run ends.
    pub fn heights(&self) -> Vec<usize> {
        let mut height = vec![1usize; self.graph.node_count()];
        for &t in self.order().iter().rev() {
            height[t] = 1 + self
                .dependents(t)
                .iter()
                .map(|&d| height[d])
                .max()
                .unwrap_or(0);
        }
        height
    }

    /// Each task's place in [`Dag::order`].
    pub fn positions(&self) -> Vec<usize> {
        let mut positions = vec![0; self.graph.node_count()];
        for (i, t) in self.order().into_iter().enumerate() {
            positions[t] = i;
        }
        positions
    }
}

/// Every dependency cycle among `order` (task ids in plan order) where `deps` maps a task to
/// the tasks it depends on. Each cycle is given as a path of ids, starting at its earliest
/// task in plan order, where each task depends on the next and the last on the first.
pub fn find_cycles<'a>(
    order: &[&'a str],
    deps: &BTreeMap<&'a str, Vec<&'a str>>,
) -> Vec<Vec<&'a str>> {
    let mut graph: DiGraph<&str, ()> = DiGraph::new();
    let index: HashMap<&str, NodeIndex> =
        order.iter().map(|id| (*id, graph.add_node(*id))).collect();
    for (task, ds) in deps {
        for dep in ds {
            if let (Some(&a), Some(&b)) = (index.get(task), index.get(dep)) {
                graph.add_edge(a, b, ());
            }
        }
    }
    let position: HashMap<&str, usize> = order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut cycles = Vec::new();
    for scc in tarjan_scc(&graph) {
        if scc.len() < 2 {
            continue;
        }
        let members: std::collections::HashSet<NodeIndex> = scc.iter().copied().collect();
        let start = *scc
            .iter()
            .min_by_key(|n| position.get(graph[**n]).copied().unwrap_or(usize::MAX))
            .expect("a component has members");
        // Shortest way back to the start, breadth first, following deps in plan order.
        let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut end = None;
        'search: while let Some(node) = queue.pop_front() {
            let mut next: Vec<NodeIndex> = graph
                .neighbors(node)
                .filter(|n| members.contains(n))
                .collect();
            next.sort_by_key(|n| position.get(graph[*n]).copied().unwrap_or(usize::MAX));
            for n in next {
                if n == start {
                    end = Some(node);
                    break 'search;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(n) {
                    e.insert(node);
                    queue.push_back(n);
                }
            }
        }
        let Some(mut node) = end else { continue };
        let mut path = vec![graph[node]];
        while node != start {
            node = parent[&node];
            path.push(graph[node]);
        }
        path.reverse();
        cycles.push(path);
    }
    cycles.sort_by_key(|c| position.get(c[0]).copied().unwrap_or(usize::MAX));
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Agent, Select};
    use std::time::Duration;

    fn task(id: &str, deps: &[&str]) -> Task {
        Task {
            target: None,
            id: id.into(),
            prompt: "p".into(),
            deps: deps.iter().map(|d| (*d).into()).collect(),
            agents: vec![Agent::command(vec!["true".into()])],
            budget: Default::default(),
            stall: None,
            setup: vec![],
            include: vec![],
            touches: vec![],
            attempts: 1,
            timeout: Duration::from_secs(1),
            select: Select::Best,
            judge: None,
            checks: vec![],
            score: None,
            retries: 0,
            on_conflict: crate::plan::OnConflict::Report,
            sandbox: Default::default(),
            grace: Duration::from_secs(1),
            protect: vec![],
            requires: Default::default(),
        }
    }

    #[test]
    fn order_respects_deps_and_plan_order() {
        let tasks = [
            task("c", &["b"]),
            task("a", &[]),
            task("b", &["a"]),
            task("d", &[]),
        ];
        let dag = Dag::new(&tasks);
        assert_eq!(dag.order(), vec![1, 2, 0, 3]);
        assert_eq!(dag.layers(), vec![vec![1, 3], vec![2], vec![0]]);
        assert_eq!(dag.downstream(1), vec![0, 2]);
        let related = dag.related(0);
        assert_eq!(
            (0..related.len())
                .filter(|&t| related[t])
                .collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(dag.deps(0), vec![2]);
        // a → b → c is the longest chain; d stands alone.
        assert_eq!(dag.heights(), vec![1, 3, 2, 1]);
    }

    proptest::proptest! {
        /// Any acyclic graph: the order holds every task once, each after its deps; layers
        /// agree with it; no cycle is found. Making the first and last task depend on each
        /// other gives a cycle, reported as a path where each task depends on the next.
        #[test]
        fn orders_and_cycles_on_random_graphs(
            n in 1usize..24,
            edges in proptest::collection::vec((0usize..24, 0usize..24), 0..60),
        ) {
            // An edge (a, b) with a < b means task b depends on task a: always acyclic.
            let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
            for (a, b) in edges {
                let (a, b) = (a % n, b % n);
                if a < b && !deps[b].contains(&a) {
                    deps[b].push(a);
                }
            }
            let ids: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
            let tasks: Vec<Task> = (0..n)
                .map(|i| {
                    let d: Vec<&str> = deps[i].iter().map(|&a| ids[a].as_str()).collect();
                    task(&ids[i], &d)
                })
                .collect();
            let dag = Dag::new(&tasks);
            let order = dag.order();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            proptest::prop_assert_eq!(sorted, (0..n).collect::<Vec<_>>());
            let position: Vec<usize> = {
                let mut p = vec![0; n];
                for (i, &t) in order.iter().enumerate() { p[t] = i; }
                p
            };
            for t in 0..n {
                for &d in &deps[t] {
                    proptest::prop_assert!(position[d] < position[t]);
                }
            }
            let layers = dag.layers();
            proptest::prop_assert_eq!(layers.iter().map(Vec::len).sum::<usize>(), n);
            let layer_of: std::collections::HashMap<usize, usize> = layers
                .iter()
                .enumerate()
                .flat_map(|(l, ts)| ts.iter().map(move |&t| (t, l)))
                .collect();
            for t in 0..n {
                for &d in &deps[t] {
                    proptest::prop_assert!(layer_of[&d] < layer_of[&t]);
                }
            }

            let order_ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let mut map: BTreeMap<&str, Vec<&str>> = (0..n)
                .map(|t| (ids[t].as_str(), deps[t].iter().map(|&a| ids[a].as_str()).collect()))
                .collect();
            proptest::prop_assert!(find_cycles(&order_ids, &map).is_empty());
            if n >= 2 {
                let last = ids[n - 1].as_str();
                map.get_mut(last).unwrap().push(ids[0].as_str());
                map.get_mut(ids[0].as_str()).unwrap().push(last);
                let cycles = find_cycles(&order_ids, &map);
                proptest::prop_assert!(!cycles.is_empty());
                for cycle in &cycles {
                    // Each member depends on the next, and the last on the first.
                    for (i, from) in cycle.iter().enumerate() {
                        let to = cycle[(i + 1) % cycle.len()];
                        proptest::prop_assert!(map[from].contains(&to), "{:?}", cycle);
                    }
                }
            }
        }
    }

    #[test]
    fn cycles_are_named_in_order() {
        let order = ["x", "a", "b", "c"];
        let deps = BTreeMap::from([
            ("a", vec!["b"]),
            ("b", vec!["c"]),
            ("c", vec!["a"]),
            ("x", vec![]),
        ]);
        assert_eq!(find_cycles(&order, &deps), vec![vec!["a", "b", "c"]]);
        let deps = BTreeMap::from([
            ("a", vec!["b"]),
            ("b", vec![]),
            ("c", vec![]),
            ("x", vec![]),
        ]);
        assert!(find_cycles(&order, &deps).is_empty());
    }
}
