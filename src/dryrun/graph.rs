//! `bootstrap graph`: the selected part of the step graph as Graphviz DOT or mermaid.

use std::collections::HashSet;
use std::fmt::Write;

use petgraph::Direction;
use petgraph::graph::NodeIndex;

use crate::dag::{Dag, Selection, Work};

fn edges(dag: &Dag, sel: &Selection) -> Vec<(usize, usize)> {
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

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

pub fn dot(dag: &Dag, sel: &Selection) -> String {
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
            let _ = writeln!(
                o,
                "    \"{}\" [label=\"{}\"{shape}];",
                esc(w.id()),
                esc(w.id())
            );
        }
        o.push_str("  }\n");
    }
    for (a, b) in edges(dag, sel) {
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

pub fn mermaid(dag: &Dag, sel: &Selection) -> String {
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
        let _ = writeln!(
            o,
            "  subgraph {}[\"{}\"]",
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
    for (a, b) in edges(dag, sel) {
        let _ = writeln!(o, "  {} --> {}", node_id(a), node_id(b));
    }
    o
}
