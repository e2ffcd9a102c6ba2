//! The journal as the first subscriber of a run's events: each transition that changes what is
//! known (a run or attempt started, a process group spawned, a unit finished, a run ended) becomes
//! one record in the state store.
//!
//! Owns the mapping from events to records, and write-ahead: the run hands it a batch of events,
//! it writes them, and [`Journal::flush`] makes them durable with one fsync (group commit) before
//! any reporter sees them or any started command is allowed to run.

use std::collections::HashMap;

use crate::error::Result;
use crate::report::Event;
use crate::state::{Outcome, Record, Store};
use crate::workspace::Workspace;

/// What the run started with that its `run-started` record keeps (beyond the event).
pub(crate) struct Selection {
    pub phases: Vec<String>,
    pub steps: Vec<String>,
}

pub(crate) struct Journal {
    pub store: Box<dyn Store>,
    run_id: String,
    selection: Selection,
    /// Each unit's current definition fingerprint, by id.
    fingerprints: HashMap<String, String>,
    /// Where this run leaves its local files (`host:state dir`).
    origin: String,
}

impl Journal {
    pub fn new(
        ws: &Workspace,
        store: Box<dyn Store>,
        run_id: String,
        selection: Selection,
    ) -> Journal {
        Journal {
            origin: crate::state::origin(&ws.state_dir),
            store,
            run_id,
            selection,
            fingerprints: ws
                .dag
                .work
                .iter()
                .map(|w| (w.id().to_string(), w.fingerprint().to_string()))
                .collect(),
        }
    }

    /// The record an event becomes, if it changes what is known.
    fn record_of(&self, e: &Event) -> Option<Record> {
        let run_id = self.run_id.clone();
        let fingerprint = |id: &str| self.fingerprints.get(id).cloned().unwrap_or_default();
        Some(match e {
            Event::RunStarted { .. } => Record::RunStarted {
                run_id,
                at: crate::state::now(),
                phases: self.selection.phases.clone(),
                steps: self.selection.steps.clone(),
                pid: std::process::id(),
                host: crate::state::hostname(),
                origin: self.origin.clone(),
            },
            Event::StepStarted {
                id, attempt, log, ..
            } => Record::StepStarted {
                run_id,
                id: id.clone(),
                at: crate::state::now(),
                attempt: *attempt,
                fingerprint: fingerprint(id),
                log: log.clone(),
            },
            Event::StepSpawned { id, pgid } => Record::StepSpawned {
                run_id,
                id: id.clone(),
                pgid: *pgid,
            },
            Event::StepFinished {
                id,
                outcome,
                attempts,
                duration_ms,
                exit_code,
                log,
                detail,
                journaled: true,
            } => Record::StepFinished {
                run_id,
                id: id.clone(),
                at: crate::state::now(),
                outcome: Outcome::parse(outcome)?,
                attempts: *attempts,
                duration_ms: *duration_ms,
                exit_code: *exit_code,
                fingerprint: fingerprint(id),
                log: log.clone(),
                // Details were redacted by the unit already; terminal codes stay out of the record.
                detail: crate::report::strip_ansi(detail),
            },
            Event::RunFinished { outcome, .. } => Record::RunFinished {
                run_id,
                at: crate::state::now(),
                outcome: outcome.clone(),
            },
            _ => return None,
        })
    }

    /// Write the event's record, if it has one (durable at the next [`Journal::flush`]).
    /// Returns whether it had one.
    pub fn write(&mut self, e: &Event) -> Result<bool> {
        match self.record_of(e) {
            Some(r) => self.store.write(&r).map(|()| true),
            None => Ok(false),
        }
    }

    /// Make every record written so far durable: one fsync for the batch (and, for a cluster
    /// backend, one write to it; the other tasks of the runtime go on meanwhile).
    pub fn flush(&mut self) -> Result<()> {
        blocking(|| self.store.sync())
    }
}

/// Run `f`, which may block on a store, without stalling the runtime's other tasks (the lab's API
/// server may be one of them).
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
