//! Before a run: which units must run and why the others are skipped, what a change means for each
//! (`on_change`), which confirmations are missing, and each unit's expected cost. The result is the
//! dispatcher's [`RunPlan`]. Reads the recorded state; writes nothing.

use std::collections::{HashMap, HashSet};

use petgraph::Direction;
use petgraph::graph::NodeIndex;

use super::RunOptions;
use super::dispatch::RunPlan;
use crate::dag::{Selection, Work};
use crate::spec::phase::OnChange;
use crate::state::State;
use crate::workspace::Workspace;

/// Which selected units run, which are changed, and why the others are skipped.
pub struct Todo {
    pub todo: HashSet<usize>,
    /// Recorded done, but the definition changed since.
    pub changed: HashSet<usize>,
    pub skip_reason: HashMap<usize, String>,
}

/// Decide which selected units must run: not recorded done, changed, downstream of a change, a
/// gate (every run), or (`--refresh`) a done unit whose check can be asked again.
///
/// A unit recorded done by a run from another origin (another machine, or another state directory:
/// a teammate's run with the state in a cluster) is checked again too: its outputs may be files
/// that only exist there (a kubeconfig, a talosconfig), and its check rebuilds them here.
pub fn work(ws: &Workspace, sel: &Selection, state: &State, refresh: bool) -> Todo {
    let mut todo = HashSet::new();
    let mut changed = HashSet::new();
    let mut skip_reason = HashMap::new();
    let in_sel: HashSet<usize> = sel.order.iter().copied().collect();
    let here = crate::state::origin(&ws.state_dir);
    for &i in &sel.order {
        let w = &ws.dag.work[i];
        let elsewhere = state
            .steps
            .get(w.id())
            .is_some_and(|s| !s.origin.is_empty() && s.origin != here);
        let refreshable = (refresh || elsewhere)
            && match w {
                Work::Step(u) => u.check.is_some() || crate::checks::is_kube(&u.run),
                Work::Gate(_) => true,
            };
        match state.steps.get(w.id()) {
            Some(s) if s.outcome.is_done() && s.fingerprint == w.fingerprint() && !refreshable => {
                skip_reason.insert(i, format!("done in run {}", s.run_id));
            }
            Some(s) if s.outcome.is_done() && s.fingerprint != w.fingerprint() => {
                todo.insert(i);
                changed.insert(i);
            }
            _ => {
                todo.insert(i);
            }
        }
    }
    // Everything downstream of a changed step is evaluated again (by its own check).
    for &c in &changed {
        for d in ws.dag.descendants(c) {
            if in_sel.contains(&d) && todo.insert(d) {
                skip_reason.remove(&d);
            }
        }
    }
    // A gate is evaluated on every run that selects its phase: it proves the phase, and the world
    // may have drifted since it last passed.
    for &i in &sel.order {
        if matches!(&ws.dag.work[i], Work::Gate(_)) && todo.insert(i) {
            skip_reason.remove(&i);
        }
    }
    Todo {
        todo,
        changed,
        skip_reason,
    }
}

/// What a changed unit means: its `on_change`.
pub fn on_change(w: &Work) -> OnChange {
    match w {
        Work::Step(u) => u.on_change,
        Work::Gate(_) => OnChange::Check,
    }
}

/// The units that need a confirmation: `confirm: true`, to run, and not answered by `--yes` (lab
/// plans never ask: nothing real is touched).
pub fn needing_confirmation(
    ws: &Workspace,
    todo: &HashSet<usize>,
    opts: &RunOptions,
) -> Vec<usize> {
    if opts.yes || ws.spec.plan.lab {
        return Vec::new();
    }
    let mut v: Vec<usize> = todo
        .iter()
        .copied()
        .filter(|&i| matches!(&ws.dag.work[i], Work::Step(u) if u.confirm))
        .collect();
    v.sort_unstable();
    v
}

/// The dispatcher's view of the run.
pub fn run_plan(
    ws: &Workspace,
    sel: &Selection,
    state: &State,
    w: &Todo,
    unconfirmed: HashSet<usize>,
    opts: &RunOptions,
) -> RunPlan {
    let in_sel: HashSet<usize> = sel.order.iter().copied().collect();
    let mut edges = Vec::new();
    for &i in &sel.order {
        for p in ws
            .dag
            .graph
            .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
        {
            if in_sel.contains(&p.index()) {
                edges.push((p.index(), i));
            }
        }
    }
    let mut serial = HashMap::new();
    let mut refuse = HashMap::new();
    let mut cost = HashMap::new();
    for &i in &sel.order {
        let work = &ws.dag.work[i];
        if let Work::Step(u) = work
            && let Some(g) = &u.serial
            && w.todo.contains(&i)
        {
            serial.insert(i, g.clone());
        }
        if w.changed.contains(&i) && on_change(work) == OnChange::Stop {
            let id = work.id();
            refuse.insert(i, format!(
                "{id} changed since it ran, and it is irreversible (on_change: stop), so the run stops here. Review the change with `bootstrap plan --step {id}`. `bootstrap reset {id}` forgets its record: the next run then runs its check, and its action only if the check fails."
            ));
        }
        // Expected cost: the last recorded duration, else 1 s.
        let secs = state
            .steps
            .get(work.id())
            .map(|s| s.duration_ms as f64 / 1000.0)
            .filter(|s| *s > 0.0)
            .unwrap_or(1.0);
        cost.insert(i, secs);
    }
    let clusters = ws.spec.plan.clusters.len().max(1);
    RunPlan {
        order: sel.order.clone(),
        edges,
        todo: w.todo.clone(),
        skip_reason: w.skip_reason.clone(),
        serial,
        refuse,
        unconfirmed,
        cost,
        concurrency: opts.concurrency.unwrap_or((2 * clusters).max(4)).max(1),
        keep_going: opts.keep_going,
    }
}
