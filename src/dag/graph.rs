//! The graph's shape: cycles (named `a -> b -> a`), a deterministic topological order, waves of
//! what can run side by side, and descendants.

use super::*;

impl Dag {
    pub(super) fn check_acyclic(&self) -> Result<(), UserErrors> {
        if petgraph::algo::toposort(&self.graph, None).is_ok() {
            return Ok(());
        }
        let mut errors = Vec::new();
        for scc in petgraph::algo::tarjan_scc(&self.graph) {
            let self_loop = scc.len() == 1 && self.graph.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            let members: HashSet<NodeIndex> = scc.iter().copied().collect();
            let start = *scc.iter().min_by_key(|n| n.index()).expect("non-empty");
            let cycle = find_cycle(&self.graph, start, &members);
            let names: Vec<&str> = cycle
                .iter()
                .map(|n| self.work[self.graph[*n]].id())
                .collect();
            let (file, line) = match &self.work[self.graph[start]] {
                Work::Step(u) => (u.file.clone(), u.line),
                Work::Gate(g) => (
                    self.phases
                        .iter()
                        .find(|p| p.id == g.phase)
                        .map(|p| p.file.clone())
                        .unwrap_or_default(),
                    0,
                ),
            };
            let mut e = UserError::new(format!("dependency cycle: {}", names.join(" -> ")))
                .in_file(file)
                .field("needs")
                .help("remove one of these `needs` so that the steps can run in some order");
            if line > 0 {
                e = e.at(line, 1).with_source_line();
            }
            errors.push(e);
        }
        Err(UserErrors(errors))
    }

    /// Deterministic topological order of a subset (ties broken by file order).
    pub fn topo_order(&self, keep: &HashSet<usize>) -> Vec<usize> {
        let mut indegree: HashMap<usize, usize> = keep.iter().map(|&i| (i, 0)).collect();
        for &i in keep {
            for p in self
                .graph
                .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
            {
                if keep.contains(&p.index()) {
                    *indegree.get_mut(&i).expect("kept") += 1;
                }
            }
        }
        let mut ready: std::collections::BTreeSet<usize> = indegree
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(i, _)| *i)
            .collect();
        let mut order = Vec::with_capacity(keep.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for c in self
                .graph
                .neighbors_directed(NodeIndex::new(i), Direction::Outgoing)
            {
                let ci = c.index();
                if let Some(d) = indegree.get_mut(&ci) {
                    *d -= 1;
                    if *d == 0 {
                        ready.insert(ci);
                    }
                }
            }
        }
        order
    }

    /// Parallel waves of an ordered subset: wave k holds what can start once waves < k are done.
    pub fn waves(&self, order: &[usize]) -> Vec<Vec<usize>> {
        let keep: HashSet<usize> = order.iter().copied().collect();
        let mut level: HashMap<usize, usize> = HashMap::new();
        let mut waves: Vec<Vec<usize>> = Vec::new();
        for &i in order {
            let l = self
                .graph
                .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
                .filter(|p| keep.contains(&p.index()))
                .map(|p| level.get(&p.index()).copied().unwrap_or(0) + 1)
                .max()
                .unwrap_or(0);
            level.insert(i, l);
            if waves.len() <= l {
                waves.resize_with(l + 1, Vec::new);
            }
            waves[l].push(i);
        }
        waves
    }

    /// Indices of everything downstream of `i`.
    pub fn descendants(&self, i: usize) -> HashSet<usize> {
        let mut out = HashSet::new();
        let mut stack = vec![NodeIndex::new(i)];
        while let Some(n) = stack.pop() {
            for c in self.graph.neighbors_directed(n, Direction::Outgoing) {
                if out.insert(c.index()) {
                    stack.push(c);
                }
            }
        }
        out
    }
}

fn find_cycle(
    g: &DiGraph<usize, ()>,
    start: NodeIndex,
    members: &HashSet<NodeIndex>,
) -> Vec<NodeIndex> {
    // BFS from start back to start inside the SCC, following outgoing edges.
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for c in g.neighbors_directed(n, Direction::Outgoing) {
            if !members.contains(&c) {
                continue;
            }
            if c == start {
                let mut path = vec![start];
                let mut cur = n;
                while cur != start {
                    path.push(cur);
                    cur = prev[&cur];
                }
                path.push(start);
                let end = path.len() - 1;
                path[1..end].reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(c) {
                e.insert(n);
                queue.push_back(c);
            }
        }
    }
    vec![start, start]
}
