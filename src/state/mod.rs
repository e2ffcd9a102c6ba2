//! The record of what ran: a crash-safe journal of every transition, and the run lock.
//!
//! Owns the state directory's files behind one small [`Store`] interface (a later backend keeps the
//! same records in a Kubernetes object). It never stores secret values: records hold ids, outcomes,
//! fingerprints, exit codes, durations and log paths, and details pass through redaction first.

pub mod backend;
pub mod definitions;
mod journal;
pub mod kube;
mod lock;
pub mod remote;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use journal::FileStore;
pub use lock::{Holder, Lock, LockError, hostname, machine_id, pid_alive};

/// A step's status from persisted state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// No run has recorded it.
    NeverRun,
    /// Recorded done (ran or satisfied) with the same definition.
    Done,
    Failed,
    /// Was running when a run died; its check decides on the next run.
    Interrupted,
    /// Done before, but its rendered definition has changed since (fingerprint differs).
    Changed,
}

impl StepStatus {
    pub fn will_run(self) -> bool {
        self != StepStatus::Done
    }
    pub fn label(self) -> &'static str {
        match self {
            StepStatus::NeverRun => "never run",
            StepStatus::Done => "done",
            StepStatus::Failed => "failed",
            StepStatus::Interrupted => "interrupted",
            StepStatus::Changed => "changed",
        }
    }
}

/// Recorded outcome and fingerprint of every step, from the journal in `state_dir`.
pub fn recorded_statuses(
    plan: &crate::spec::Plan,
    state_dir: &std::path::Path,
) -> std::collections::HashMap<String, (StepStatus, String)> {
    let state = backend::load(Some(plan), state_dir).unwrap_or_else(|e| {
        eprintln!(
            "warning: the recorded state could not be read, so every step shows as never run: {e:#}"
        );
        State::default()
    });
    state
        .steps
        .values()
        .map(|s| {
            let st = match s.outcome {
                Outcome::Done | Outcome::Satisfied => StepStatus::Done,
                Outcome::Failed => StepStatus::Failed,
                Outcome::Interrupted => StepStatus::Interrupted,
            };
            (s.id.clone(), (st, s.fingerprint.clone()))
        })
        .collect()
}

/// How a step (or gate) ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The action ran and succeeded (and its verify passed).
    Done,
    /// The check passed: the work was already done, nothing ran.
    Satisfied,
    Failed,
    /// The process died or was interrupted while it ran; its check decides on the next run.
    Interrupted,
}

impl Outcome {
    pub fn is_done(self) -> bool {
        matches!(self, Outcome::Done | Outcome::Satisfied)
    }
    /// The word events, records and views use.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Satisfied => "satisfied",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }
    /// The outcome [`Outcome::as_str`] names.
    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Done,
            Outcome::Satisfied,
            Outcome::Failed,
            Outcome::Interrupted,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// One journal record. Every transition is recorded before the run moves on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum Record {
    RunStarted {
        run_id: String,
        at: String,
        /// `--phase` and `--step` of this run, for `resume`.
        phases: Vec<String>,
        steps: Vec<String>,
        pid: u32,
        host: String,
        /// `host:state dir`: where this run's steps left their local files (kubeconfig,
        /// talosconfig). A step recorded from another origin is checked again before it is
        /// trusted.
        #[serde(default)]
        origin: String,
    },
    StepStarted {
        run_id: String,
        id: String,
        at: String,
        attempt: u32,
        fingerprint: String,
        log: String,
    },
    StepFinished {
        run_id: String,
        id: String,
        at: String,
        outcome: Outcome,
        attempts: u32,
        duration_ms: u64,
        exit_code: Option<i32>,
        fingerprint: String,
        log: String,
        /// What the check or command said (redacted), for status and reports.
        detail: String,
    },
    /// A step's command started in process group `pgid` (so a later run can stop it if this run
    /// dies).
    StepSpawned {
        run_id: String,
        id: String,
        pgid: u32,
    },
    RunFinished {
        run_id: String,
        at: String,
        /// `succeeded`, `failed` or `interrupted`.
        outcome: String,
    },
    /// `bootstrap reset`: forget these steps (empty with `all`).
    Reset {
        at: String,
        ids: Vec<String>,
        all: bool,
    },
    /// Everything the records before it added up to (written by compaction, as the journal's
    /// first line: it replaces them).
    Snapshot { at: String, state: Box<State> },
}

/// What one step's records add up to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepState {
    pub id: String,
    pub outcome: Outcome,
    pub attempts: u32,
    pub duration_ms: u64,
    pub exit_code: Option<i32>,
    pub fingerprint: String,
    pub log: String,
    pub run_id: String,
    pub at: String,
    pub detail: String,
    /// The process group of its last command, while it runs (none once it finished).
    #[serde(default)]
    pub pgid: Option<u32>,
    /// When each attempt of its last run started (`logs --attempt N` splits the log by these).
    #[serde(default)]
    pub starts: Vec<String>,
    /// Where the run that recorded it ran (`host:state dir`; empty when unknown).
    #[serde(default)]
    pub origin: String,
}

/// The last run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    pub run_id: String,
    pub started: String,
    pub phases: Vec<String>,
    pub steps: Vec<String>,
    /// `running` if no RunFinished was recorded (the process died), else its outcome.
    pub outcome: String,
    pub finished: Option<String>,
    /// The machine it ran on (its step logs are there).
    #[serde(default)]
    pub host: String,
    /// `host:state dir` of the run.
    #[serde(default)]
    pub origin: String,
}

/// Everything the journal says, folded.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub steps: BTreeMap<String, StepState>,
    pub last_run: Option<RunState>,
}

/// This process's origin for a state directory: `host:absolute state dir`.
pub fn origin(state_dir: &std::path::Path) -> String {
    format!(
        "{}:{}",
        hostname(),
        crate::dag::absolute_dir(state_dir).display()
    )
}

impl State {
    /// The origin of run `run_id`, when it is the last run (the one whose records are folding).
    fn origin_of(&self, run_id: &str) -> String {
        self.last_run
            .as_ref()
            .filter(|r| r.run_id == run_id)
            .map(|r| r.origin.clone())
            .unwrap_or_default()
    }

    /// Fold one record in.
    pub fn apply(&mut self, rec: &Record) {
        match rec {
            Record::RunStarted {
                run_id,
                at,
                phases,
                steps,
                host,
                origin,
                ..
            } => {
                self.last_run = Some(RunState {
                    run_id: run_id.clone(),
                    started: at.clone(),
                    phases: phases.clone(),
                    steps: steps.clone(),
                    outcome: "running".into(),
                    finished: None,
                    host: host.clone(),
                    origin: origin.clone(),
                });
            }
            Record::StepStarted {
                run_id,
                id,
                at,
                attempt,
                fingerprint,
                log,
            } => {
                // Until it finishes, a started step counts as interrupted: if the process dies now,
                // that is what it was.
                let mut starts = match self.steps.get(id) {
                    Some(s) if &s.run_id == run_id => s.starts.clone(),
                    _ => Vec::new(),
                };
                starts.push(at.clone());
                self.steps.insert(
                    id.clone(),
                    StepState {
                        id: id.clone(),
                        outcome: Outcome::Interrupted,
                        attempts: *attempt,
                        duration_ms: 0,
                        exit_code: None,
                        fingerprint: fingerprint.clone(),
                        log: log.clone(),
                        run_id: run_id.clone(),
                        at: at.clone(),
                        detail: "was running when the run stopped".into(),
                        pgid: None,
                        starts,
                        origin: self.origin_of(run_id),
                    },
                );
            }
            Record::StepFinished {
                run_id,
                id,
                at,
                outcome,
                attempts,
                duration_ms,
                exit_code,
                fingerprint,
                log,
                detail,
            } => {
                let starts = match self.steps.get(id) {
                    Some(s) if &s.run_id == run_id => s.starts.clone(),
                    _ => Vec::new(),
                };
                self.steps.insert(
                    id.clone(),
                    StepState {
                        id: id.clone(),
                        outcome: *outcome,
                        attempts: *attempts,
                        duration_ms: *duration_ms,
                        exit_code: *exit_code,
                        fingerprint: fingerprint.clone(),
                        log: log.clone(),
                        run_id: run_id.clone(),
                        at: at.clone(),
                        detail: detail.clone(),
                        pgid: None,
                        starts,
                        origin: self.origin_of(run_id),
                    },
                );
            }
            Record::StepSpawned { run_id, id, pgid } => {
                if let Some(s) = self.steps.get_mut(id)
                    && &s.run_id == run_id
                    && s.outcome == Outcome::Interrupted
                {
                    s.pgid = Some(*pgid);
                }
            }
            Record::RunFinished {
                run_id,
                at,
                outcome,
            } => {
                if let Some(r) = &mut self.last_run
                    && &r.run_id == run_id
                {
                    r.outcome = outcome.clone();
                    r.finished = Some(at.clone());
                }
            }
            Record::Snapshot { state, .. } => *self = (**state).clone(),
            Record::Reset { ids, all, .. } => {
                if *all {
                    self.steps.clear();
                } else {
                    for id in ids {
                        self.steps.remove(id);
                    }
                }
            }
        }
    }
}

/// An fsync to run on a blocking thread.
pub type OffThreadSync = Box<dyn FnOnce() -> crate::error::Result<()> + Send>;

/// The one interface the engine uses to persist state.
pub trait Store: Send {
    /// Record a transition durably before returning.
    fn append(&mut self, rec: &Record) -> crate::error::Result<()> {
        self.write(rec)?;
        self.sync()
    }
    /// Add a record to the current batch (not yet durable: nothing may depend on it before
    /// [`Store::sync`]).
    fn write(&mut self, rec: &Record) -> crate::error::Result<()>;
    /// Make every written record durable (one fsync for a batch: group commit).
    fn sync(&mut self) -> crate::error::Result<()>;
    /// The same, as work for another thread, so the run goes on meanwhile: what makes every record
    /// written so far durable. None when the store can only sync in place ([`Store::sync`]).
    fn sync_off_thread(&mut self) -> crate::error::Result<Option<OffThreadSync>> {
        Ok(None)
    }
    /// Everything recorded so far.
    fn load(&self) -> crate::error::Result<State>;
    /// Replace the records with one snapshot of what they add up to, atomically (a crash leaves
    /// either the old journal or the new one). Returns the sizes before and after.
    fn compact(&mut self) -> crate::error::Result<(u64, u64)>;
    /// The run has ended: leave what readers want next (the local store's state snapshot).
    fn finished(&self) {}
    /// Keep the run's markdown report where teammates see it (the local store has it on disk).
    fn keep_report(&mut self, _run_id: &str, _markdown: &str) {}
    /// Where the records are, for messages.
    fn describe(&self) -> String;
    /// Records kept on this machine that the backend does not have yet.
    fn unsent(&self) -> usize {
        0
    }
    /// Writes that lost a resourceVersion race and were applied again.
    fn conflicts(&self) -> u32 {
        0
    }
    /// The run is over: make sure the backend has every record. Returns those it still lacks.
    fn close(&mut self) -> usize {
        0
    }
}

/// Now, as RFC 3339 (UTC).
pub fn now() -> String {
    jiff::Timestamp::now().to_string()
}
