//! `bootstrap graph`: the selected part of the step graph as Graphviz DOT, mermaid or JSON.
//!
//! Edges are transitively reduced by default (an edge implied by a longer path is not drawn), and
//! `--status` colours each node by its recorded status, so the graph is a picture of progress.

use std::collections::HashSet;
use std::fmt::Write;

use petgraph::Direction;
use petgraph::graph::NodeIndex;

use crate::dag::{Dag, Selection, Work};

/// What to draw: the edges, and each node's recorded status (with `--status`).
pub struct Drawing {
    pub edges: Vec<(usize, usize)>,
    pub status: Option<std::collections::HashMap<usize, String>>,
}

/// Every dependency edge within the selection.
pub fn edges(dag: &Dag, sel: &Selection) -> Vec<(usize, usize)> {
    let keep: HashSet<usize> = sel.order.iter().copied().collect();
    let mut out = Vec::new();
    for &i in &sel.order {
        for p in dag
            .graph
            .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
        {
            if keep.contains(&p.index()) {
                out.push((p.index(), i));
            }
        }
    }
    out.sort_unstable();
    out
}

/// The edges no longer path implies (the transitive reduction of the acyclic selection).
pub fn reduce(edges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    use std::collections::{HashMap, HashSet};
    let mut out: HashMap<usize, Vec<usize>> = HashMap::new();
    for &(a, b) in edges {
        out.entry(a).or_default().push(b);
    }
    // Is `to` reachable from `from` without using the direct edge from -> to?
    let reachable_other = |from: usize, to: usize| {
        let mut stack: Vec<usize> = out
            .get(&from)
            .map(|v| v.iter().copied().filter(|&n| n != to).collect())
            .unwrap_or_default();
        let mut seen: HashSet<usize> = stack.iter().copied().collect();
        while let Some(n) = stack.pop() {
            if n == to {
                return true;
            }
            for &m in out.get(&n).map(|v| v.as_slice()).unwrap_or(&[]) {
                if seen.insert(m) {
                    stack.push(m);
                }
            }
        }
        false
    };
    edges
        .iter()
        .copied()
        .filter(|&(a, b)| !reachable_other(a, b))
        .collect()
}

/// Fill colours by recorded status.
fn fill(status: &str) -> &'static str {
    match status {
        "done" | "satisfied" => "#c8e6c9",
        "failed" => "#ffcdd2",
        "interrupted" => "#ffe0b2",
        "changed" => "#fff9c4",
        _ => "#eeeeee",
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

pub fn dot(dag: &Dag, sel: &Selection, d: &Drawing) -> String {
    let mut o = String::from(
        "digraph bootstrap {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    for p in &dag.phases {
        let members: Vec<usize> = sel
            .order
            .iter()
            .copied()
            .filter(|&i| dag.work[i].phase() == p.id)
            .collect();
        if members.is_empty() {
            continue;
        }
        let _ = writeln!(
            o,
            "  subgraph \"cluster_{}\" {{\n    label=\"{}\";",
            esc(&p.id),
            esc(&p.title)
        );
        for i in members {
            let w = &dag.work[i];
            let shape = if matches!(w, Work::Gate(_)) {
                ", shape=octagon"
            } else {
                ""
            };
            let color = d
                .status
                .as_ref()
                .and_then(|m| m.get(&i))
                .map(|st| {
                    format!(
                        ", style=filled, fillcolor=\"{}\", tooltip=\"{st}\"",
                        fill(st)
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "    \"{}\" [label=\"{}\"{shape}{color}];",
                esc(w.id()),
                esc(w.id())
            );
        }
        o.push_str("  }\n");
    }
    for &(a, b) in &d.edges {
        let _ = writeln!(
            o,
            "  \"{}\" -> \"{}\";",
            esc(dag.work[a].id()),
            esc(dag.work[b].id())
        );
    }
    o.push_str("}\n");
    o
}

pub fn mermaid(dag: &Dag, sel: &Selection, d: &Drawing) -> String {
    let mut o = String::from("flowchart LR\n");
    let node_id = |i: usize| format!("n{i}");
    for p in &dag.phases {
        let members: Vec<usize> = sel
            .order
            .iter()
            .copied()
            .filter(|&i| dag.work[i].phase() == p.id)
            .collect();
        if members.is_empty() {
            continue;
        }
        // Prefixed: a phase named `end` (a mermaid keyword) must not close the subgraph.
        let _ = writeln!(
            o,
            "  subgraph phase_{}[\"{}\"]",
            p.id.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            p.title.replace('"', "'")
        );
        for i in members {
            let w = &dag.work[i];
            let label = w.id().replace('"', "'");
            match w {
                Work::Gate(_) => {
                    let _ = writeln!(o, "    {}{{{{\"{label}\"}}}}", node_id(i));
                }
                Work::Step(_) => {
                    let _ = writeln!(o, "    {}[\"{label}\"]", node_id(i));
                }
            }
        }
        o.push_str("  end\n");
    }
    for &(a, b) in &d.edges {
        let _ = writeln!(o, "  {} --> {}", node_id(a), node_id(b));
    }
    if let Some(m) = &d.status {
        let mut classes: Vec<&str> = m.values().map(String::as_str).collect();
        classes.sort_unstable();
        classes.dedup();
        for c in classes {
            let _ = writeln!(o, "  classDef {} fill:{}", c.replace('-', "_"), fill(c));
        }
        let mut nodes: Vec<(&usize, &String)> = m.iter().collect();
        nodes.sort();
        for (i, st) in nodes {
            let _ = writeln!(o, "  class {} {}", node_id(*i), st.replace('-', "_"));
        }
    }
    o
}

/// `--output json`: nodes (with their recorded status under `--status`) and edges.
pub fn json(dag: &Dag, sel: &Selection, d: &Drawing) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = sel
        .order
        .iter()
        .map(|&i| {
            let w = &dag.work[i];
            serde_json::json!({
                "id": w.id(),
                "phase": w.phase(),
                "kind": if matches!(w, Work::Gate(_)) { "gate" } else { "step" },
                "status": d.status.as_ref().and_then(|m| m.get(&i)),
            })
        })
        .collect();
    let edges: Vec<[&str; 2]> = d
        .edges
        .iter()
        .map(|&(a, b)| [dag.work[a].id(), dag.work[b].id()])
        .collect();
    serde_json::json!({ "schema": 1, "nodes": nodes, "edges": edges })
}

#[cfg(test)]
mod tests {
    use super::reduce;

    #[test]
    fn an_edge_implied_by_a_longer_path_is_dropped() {
        // 0 -> 1 -> 2, and 0 -> 2 is implied.
        assert_eq!(reduce(&[(0, 1), (1, 2), (0, 2)]), vec![(0, 1), (1, 2)]);
        assert_eq!(reduce(&[(0, 2), (1, 2)]), vec![(0, 2), (1, 2)]);
    }
}
