//! The dispatcher: every decision of a run, and nothing else. What is ready, what starts next,
//! whether an attempt may start, what a unit's result means (go on, stop new work, cancel waits,
//! block dependents), when the run is over and how it ended.
//!
//! A state machine without I/O (quinn-proto's "sans-IO" style): it takes inputs (a unit finished,
//! an attempt wants to start, a signal) and returns [`Decision`]s. No processes, clocks, files or
//! tasks: `execute` wires it to the executor, the journal and the reporters, and the unit tests
//! below drive it with synthetic results.

use std::collections::{BTreeSet, HashMap, HashSet};

/// What the run must do about one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start the unit (its check, action and verify, or a gate's items).
    Start(usize),
    /// Do not run it: recorded done and unchanged, or it needs a unit that failed.
    Skip { index: usize, reason: String },
    /// It may not run by itself: a changed irreversible step (`on_change: stop`). The run stops.
    Refuse { index: usize, detail: String },
    /// It needs confirmation that was not given: the run stops before it.
    NeedsConfirmation(usize),
    /// A unit failed: read-only work (checks, waits, verifies, gate items) stops now.
    CancelWaits,
}

/// How a unit ended, as the dispatcher needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Done,
    Satisfied,
    Failed,
    Interrupted,
    /// Its action was refused (the run was stopping): nothing was recorded.
    NotStarted,
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded,
    Failed,
    Interrupted,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Interrupted => "interrupted",
        }
    }
}

/// The shape of a run, decided before it starts.
#[derive(Debug, Clone, Default)]
pub struct RunPlan {
    /// Units in execution order (file order within the topological order).
    pub order: Vec<usize>,
    /// `(needed, needer)` pairs between units of `order`.
    pub edges: Vec<(usize, usize)>,
    /// Units to run; the others are skipped with their `skip_reason`.
    pub todo: HashSet<usize>,
    pub skip_reason: HashMap<usize, String>,
    /// Serial group of each unit that has one: units of a group never run at once.
    pub serial: HashMap<usize, String>,
    /// Changed units that may not run by themselves, with what to tell the user.
    pub refuse: HashMap<usize, String>,
    /// Units that need a confirmation that was not given.
    pub unconfirmed: HashSet<usize>,
    /// Expected cost of each unit (seconds), for critical-path priority; 1 when unknown.
    pub cost: HashMap<usize, f64>,
    pub concurrency: usize,
    pub keep_going: bool,
}

pub struct Dispatcher {
    plan: RunPlan,
    children: HashMap<usize, Vec<usize>>,
    waiting: HashMap<usize, usize>,
    /// Ready units by priority: longest remaining path first, then file order.
    ready: BTreeSet<(std::cmp::Reverse<u64>, usize, usize)>,
    priority: HashMap<usize, u64>,
    position: HashMap<usize, usize>,
    running: HashSet<usize>,
    held: HashSet<String>,
    blocked: HashSet<usize>,
    stopping: bool,
    interrupted: bool,
    failed: Vec<usize>,
    unconfirmed_hit: Option<usize>,
    finished: usize,
}

impl Dispatcher {
    pub fn new(plan: RunPlan) -> Dispatcher {
        let in_run: HashSet<usize> = plan.order.iter().copied().collect();
        let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut waiting: HashMap<usize, usize> = plan.order.iter().map(|&i| (i, 0)).collect();
        for &(from, to) in &plan.edges {
            if in_run.contains(&from) && in_run.contains(&to) {
                children.entry(from).or_default().push(to);
                *waiting.entry(to).or_default() += 1;
            }
        }
        let position = plan
            .order
            .iter()
            .enumerate()
            .map(|(p, &i)| (i, p))
            .collect();
        // Critical path: a unit's priority is its own cost plus the longest chain after it
        // (in milliseconds), computed from the last unit back.
        let mut priority: HashMap<usize, u64> = HashMap::new();
        for &i in plan.order.iter().rev() {
            let own = (plan.cost.get(&i).copied().unwrap_or(1.0) * 1000.0) as u64;
            let after = children
                .get(&i)
                .into_iter()
                .flatten()
                .filter_map(|c| priority.get(c))
                .max()
                .copied()
                .unwrap_or(0);
            priority.insert(i, own + after);
        }
        let mut d = Dispatcher {
            children,
            waiting,
            ready: BTreeSet::new(),
            priority,
            position,
            running: HashSet::new(),
            held: HashSet::new(),
            blocked: HashSet::new(),
            stopping: false,
            interrupted: false,
            failed: Vec::new(),
            unconfirmed_hit: None,
            finished: 0,
            plan,
        };
        let roots: Vec<usize> = d
            .plan
            .order
            .iter()
            .copied()
            .filter(|i| d.waiting[i] == 0)
            .collect();
        for i in roots {
            d.make_ready(i);
        }
        d
    }

    fn make_ready(&mut self, i: usize) {
        let p = self.priority.get(&i).copied().unwrap_or(0);
        self.ready
            .insert((std::cmp::Reverse(p), self.position[&i], i));
    }

    /// Its dependents lose one thing to wait for.
    fn release_children(&mut self, i: usize) {
        for c in self.children.get(&i).cloned().unwrap_or_default() {
            if let Some(n) = self.waiting.get_mut(&c) {
                *n -= 1;
                if *n == 0 {
                    self.make_ready(c);
                }
            }
        }
    }

    fn block_descendants(&mut self, i: usize) {
        let mut stack = vec![i];
        while let Some(n) = stack.pop() {
            for c in self.children.get(&n).cloned().unwrap_or_default() {
                if self.blocked.insert(c) {
                    stack.push(c);
                }
            }
        }
    }

    /// What can happen now: skips, refusals and starts, up to the concurrency limit.
    pub fn decide(&mut self) -> Vec<Decision> {
        let mut out = Vec::new();
        while !self.stopping {
            // The first ready unit that needs no slot, or whose serial group is free.
            let pick = self.ready.iter().copied().find(|&(_, _, i)| {
                let needs_slot = self.plan.todo.contains(&i) && !self.blocked.contains(&i);
                let group_free = self
                    .plan
                    .serial
                    .get(&i)
                    .is_none_or(|g| !self.held.contains(g));
                !needs_slot || (group_free && self.running.len() < self.plan.concurrency)
            });
            let Some(key @ (_, _, i)) = pick else { break };
            self.ready.remove(&key);
            if self.blocked.contains(&i) {
                self.finished += 1;
                out.push(Decision::Skip {
                    index: i,
                    reason: "not run: it needs a step that failed".into(),
                });
                self.release_children(i);
                continue;
            }
            if !self.plan.todo.contains(&i) {
                self.finished += 1;
                let reason = self
                    .plan
                    .skip_reason
                    .get(&i)
                    .cloned()
                    .unwrap_or_else(|| "done".into());
                out.push(Decision::Skip { index: i, reason });
                self.release_children(i);
                continue;
            }
            if let Some(detail) = self.plan.refuse.get(&i).cloned() {
                self.finished += 1;
                self.failed.push(i);
                self.stopping = true;
                out.push(Decision::Refuse { index: i, detail });
                out.push(Decision::CancelWaits);
                break;
            }
            if self.plan.unconfirmed.contains(&i) {
                self.unconfirmed_hit = Some(i);
                self.stopping = true;
                out.push(Decision::NeedsConfirmation(i));
                break;
            }
            if let Some(g) = self.plan.serial.get(&i) {
                self.held.insert(g.clone());
            }
            self.running.insert(i);
            out.push(Decision::Start(i));
        }
        out
    }

    /// An attempt of a running unit wants to start its action: allowed unless the run is stopping.
    pub fn permit(&self, i: usize) -> bool {
        !self.stopping && self.running.contains(&i)
    }

    /// A unit ended.
    pub fn finished(&mut self, i: usize, ended: Ended) -> Vec<Decision> {
        if !self.running.remove(&i) {
            return Vec::new();
        }
        if let Some(g) = self.plan.serial.get(&i) {
            self.held.remove(g);
        }
        match ended {
            Ended::NotStarted => Vec::new(),
            Ended::Done | Ended::Satisfied => {
                self.finished += 1;
                self.release_children(i);
                Vec::new()
            }
            Ended::Failed | Ended::Interrupted => {
                self.finished += 1;
                if ended == Ended::Failed {
                    self.failed.push(i);
                }
                if self.interrupted {
                    return Vec::new();
                }
                if self.plan.keep_going {
                    self.block_descendants(i);
                    self.release_children(i);
                    Vec::new()
                } else if !self.stopping {
                    self.stopping = true;
                    vec![Decision::CancelWaits]
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// A signal: nothing new starts; the executor interrupts what runs.
    pub fn interrupt(&mut self) {
        self.interrupted = true;
        self.stopping = true;
    }

    /// The run may not go on (its lock is lost): nothing new starts, what runs finishes.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Nothing runs and nothing more will start.
    pub fn is_over(&self) -> bool {
        self.running.is_empty() && (self.ready.is_empty() || self.stopping)
    }

    pub fn outcome(&self) -> RunOutcome {
        if self.interrupted {
            RunOutcome::Interrupted
        } else if self.failed.is_empty()
            && self.unconfirmed_hit.is_none()
            && self.finished == self.plan.order.len()
        {
            RunOutcome::Succeeded
        } else {
            RunOutcome::Failed
        }
    }

    /// Units that failed, in the order they failed.
    pub fn failed(&self) -> &[usize] {
        &self.failed
    }

    /// The unit the run stopped before for want of a confirmation.
    pub fn unconfirmed(&self) -> Option<usize> {
        self.unconfirmed_hit
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of `n` units with these edges, all to do.
    fn plan(n: usize, edges: &[(usize, usize)]) -> RunPlan {
        RunPlan {
            order: (0..n).collect(),
            edges: edges.to_vec(),
            todo: (0..n).collect(),
            concurrency: 4,
            ..RunPlan::default()
        }
    }

    fn starts(ds: &[Decision]) -> Vec<usize> {
        ds.iter()
            .filter_map(|d| match d {
                Decision::Start(i) => Some(*i),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ready_units_start_in_dependency_order_up_to_the_concurrency() {
        // 0 -> 2, 1 -> 2, 3 alone; concurrency 2.
        let mut p = plan(4, &[(0, 2), (1, 2)]);
        p.concurrency = 2;
        let mut d = Dispatcher::new(p);
        assert_eq!(starts(&d.decide()), vec![0, 1]);
        assert!(d.decide().is_empty(), "no slot is free");
        assert!(d.permit(0));
        assert!(d.finished(0, Ended::Done).is_empty());
        assert_eq!(starts(&d.decide()), vec![3], "2 still waits for 1");
        d.finished(1, Ended::Satisfied);
        assert_eq!(starts(&d.decide()), vec![2]);
        d.finished(2, Ended::Done);
        d.finished(3, Ended::Done);
        assert!(d.is_over());
        assert_eq!(d.outcome(), RunOutcome::Succeeded);
    }

    #[test]
    fn the_longest_remaining_path_starts_first_then_file_order() {
        // 0 and 1 are independent single steps listed first; 2 -> 3 -> 4 is a chain.
        let mut p = plan(5, &[(2, 3), (3, 4)]);
        p.concurrency = 1;
        let mut d = Dispatcher::new(p);
        assert_eq!(
            starts(&d.decide()),
            vec![2],
            "the head of the longest chain first"
        );
        d.finished(2, Ended::Done);
        assert_eq!(starts(&d.decide()), vec![3]);
        d.finished(3, Ended::Done);
        // 0, 1 and 4 each have one step left: ties go by file order.
        assert_eq!(starts(&d.decide()), vec![0], "ties by file order");
    }

    #[test]
    fn recorded_costs_steer_the_priority() {
        let mut p = plan(3, &[]);
        p.concurrency = 1;
        p.cost = HashMap::from([(0, 1.0), (1, 30.0), (2, 5.0)]);
        let mut d = Dispatcher::new(p);
        assert_eq!(starts(&d.decide()), vec![1]);
    }

    #[test]
    fn done_units_are_skipped_and_release_their_dependents() {
        let mut p = plan(2, &[(0, 1)]);
        p.todo.remove(&0);
        p.skip_reason.insert(0, "done in run r1".into());
        let mut d = Dispatcher::new(p);
        let ds = d.decide();
        assert_eq!(
            ds,
            vec![
                Decision::Skip {
                    index: 0,
                    reason: "done in run r1".into()
                },
                Decision::Start(1)
            ]
        );
    }

    #[test]
    fn a_failure_stops_new_work_cancels_waits_and_refuses_new_attempts() {
        let mut d = Dispatcher::new(plan(3, &[(0, 2)]));
        assert_eq!(starts(&d.decide()), vec![0, 1]);
        assert_eq!(d.finished(0, Ended::Failed), vec![Decision::CancelWaits]);
        assert!(!d.permit(1), "no action starts once the run is stopping");
        assert!(d.decide().is_empty());
        assert!(!d.is_over(), "1 still runs");
        d.finished(1, Ended::NotStarted);
        assert!(d.is_over());
        assert_eq!(d.outcome(), RunOutcome::Failed);
        assert_eq!(d.failed(), &[0]);
    }

    #[test]
    fn keep_going_runs_every_branch_that_does_not_need_the_failure() {
        let mut p = plan(4, &[(0, 1), (1, 2)]);
        p.keep_going = true;
        p.concurrency = 1;
        let mut d = Dispatcher::new(p);
        assert_eq!(starts(&d.decide()), vec![0]);
        assert!(d.finished(0, Ended::Failed).is_empty());
        let ds = d.decide();
        assert!(ds.contains(&Decision::Skip {
            index: 1,
            reason: "not run: it needs a step that failed".into()
        }));
        assert!(ds.contains(&Decision::Skip {
            index: 2,
            reason: "not run: it needs a step that failed".into()
        }));
        assert_eq!(starts(&ds), vec![3]);
        d.finished(3, Ended::Done);
        assert!(d.is_over());
        assert_eq!(d.outcome(), RunOutcome::Failed);
    }

    #[test]
    fn units_of_one_serial_group_never_run_at_once() {
        let mut p = plan(3, &[]);
        p.serial = HashMap::from([(0, "kubeconfig".into()), (1, "kubeconfig".into())]);
        let mut d = Dispatcher::new(p);
        assert_eq!(starts(&d.decide()), vec![0, 2], "1 waits for the group");
        d.finished(0, Ended::Done);
        assert_eq!(starts(&d.decide()), vec![1]);
    }

    #[test]
    fn a_changed_irreversible_unit_is_refused_and_stops_the_run() {
        let mut p = plan(2, &[(0, 1)]);
        p.refuse.insert(0, "changed; reset it".into());
        let mut d = Dispatcher::new(p);
        let ds = d.decide();
        assert_eq!(
            ds,
            vec![
                Decision::Refuse {
                    index: 0,
                    detail: "changed; reset it".into()
                },
                Decision::CancelWaits
            ]
        );
        assert!(d.is_over());
        assert_eq!(d.outcome(), RunOutcome::Failed);
    }

    #[test]
    fn an_unconfirmed_unit_stops_the_run_before_it() {
        let mut p = plan(2, &[]);
        p.unconfirmed.insert(1);
        p.concurrency = 1;
        let mut d = Dispatcher::new(p);
        assert_eq!(starts(&d.decide()), vec![0]);
        d.finished(0, Ended::Done);
        assert_eq!(d.decide(), vec![Decision::NeedsConfirmation(1)]);
        assert!(d.is_over());
        assert_eq!(d.unconfirmed(), Some(1));
        assert_eq!(d.outcome(), RunOutcome::Failed);
    }

    #[test]
    fn an_interrupt_stops_everything_and_the_run_ends_interrupted() {
        let mut d = Dispatcher::new(plan(3, &[(0, 1)]));
        assert_eq!(starts(&d.decide()), vec![0, 2]);
        d.interrupt();
        assert!(!d.permit(0));
        assert!(d.finished(0, Ended::Interrupted).is_empty());
        d.finished(2, Ended::Interrupted);
        assert!(d.decide().is_empty());
        assert!(d.is_over());
        assert_eq!(d.outcome(), RunOutcome::Interrupted);
    }

    #[test]
    fn a_retry_attempt_asks_again_and_is_refused_after_a_failure_elsewhere() {
        let mut d = Dispatcher::new(plan(2, &[]));
        starts(&d.decide());
        assert!(d.permit(1), "first attempt");
        d.finished(0, Ended::Failed);
        assert!(!d.permit(1), "a retry after another unit failed");
    }
}
