//! One run, wired: the dispatcher's decisions become unit tasks, the units' messages become
//! events; the journal subscribes first (its records durable before the run moves on), then the
//! reporters.
//!
//! Owns the order of effects (record, then acknowledge; record, then report), not the decisions:
//! those are [`super::dispatch`]'s.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::dispatch::{Decision, Dispatcher, Ended};
use super::journal::Journal;
use super::signals::Signals;
use super::{Msg, UnitResult, unit};
use crate::checks::Clusters;
use crate::dag::Work;
use crate::error::Result;
use crate::report::{Event, Fanout, MarkdownReport, Reporter};
use crate::secrets::Redactor;
use crate::state::kube::Lost;
use crate::state::{Holder, Outcome, State};
use crate::workspace::Workspace;

/// Something waiting for the records written before it to be durable: an attempt's answer (and
/// its `step-started` event), or an event for the reporters.
enum Held {
    Ack(tokio::sync::oneshot::Sender<bool>, Event),
    Event(Event),
}

/// What to do about a message once its batch of records is durable.
enum After {
    Started(tokio::sync::oneshot::Sender<bool>, Event),
    /// The unit's result, and the dispatcher's decisions on it (applied once durable).
    Finished(UnitResult, Vec<Decision>),
    /// An event to report once durable.
    Report(Event),
}

/// What every unit of the run shares.
pub(crate) struct Shared {
    pub env: BTreeMap<String, String>,
    pub clusters: Arc<Clusters>,
    pub redactor: Redactor,
    /// Changed units whose action runs even if their check passes (`on_change: run`).
    pub forced: HashSet<usize>,
    pub state: State,
}

/// The run's effects: journal, reporters, and what the summary needs.
pub(crate) struct Run<'a> {
    pub ws: &'a Workspace,
    pub run_id: String,
    pub started: Instant,
    /// The first subscriber: every event that changes what is known, recorded.
    pub journal: Journal,
    pub reporter: Fanout,
    pub report: MarkdownReport,
    /// Failed unit id -> (output tail, log path).
    pub tails: BTreeMap<String, (String, String)>,
    phases: BTreeSet<String>,
    /// Since when records have been written but not made durable (group commit).
    dirty_since: Option<Instant>,
    /// Answers and events held back until the records before them are durable (record, then
    /// report), waiting for the next fsync.
    held: Vec<Held>,
    /// Those waiting for the fsync in flight (on a blocking thread, while the run goes on).
    syncing: Option<Vec<Held>>,
    /// An attempt waits for its answer: start an fsync as soon as none is in flight.
    want_sync: bool,
    /// Set when the run loses its lock in a cluster backend: nothing new starts.
    pub lost: Arc<Lost>,
    /// This run as the lock's holder.
    pub me: Holder,
}

/// How long a record that nobody waits for (a finished unit, a spawned process group) may wait
/// for the next fsync: the next attempt that asks to start usually comes sooner and shares it.
const GROUP_COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

impl<'a> Run<'a> {
    pub fn new(
        ws: &'a Workspace,
        outputs: super::Outputs,
        journal: Journal,
        me: Holder,
        lost: Arc<Lost>,
        started: Instant,
    ) -> Run<'a> {
        Run {
            ws,
            run_id: me.run_id.clone(),
            started,
            journal,
            reporter: Fanout(outputs.reporters),
            report: outputs.report,
            tails: BTreeMap::new(),
            phases: BTreeSet::new(),
            dirty_since: None,
            held: Vec::new(),
            syncing: None,
            want_sync: false,
            lost,
            me,
        }
    }

    /// An event outside a batch: recorded (and made durable) first if it changes what is known,
    /// then reported.
    pub fn emit(&mut self, e: Event) -> Result<()> {
        self.write(&e)?;
        self.sync()?;
        self.report(e);
        Ok(())
    }

    /// Write the event's record, if it has one (durable at the next [`Run::sync`]).
    fn write(&mut self, e: &Event) -> Result<()> {
        if self.journal.write(e)? {
            self.dirty_since.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    /// Make every written record durable (one fsync, waited for), then release what was held for
    /// it. Only when no fsync is in flight ([`Run::drive`] waits for it first).
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty_since.take().is_some() {
            self.journal.flush()?;
        }
        self.want_sync = false;
        for h in std::mem::take(&mut self.held) {
            self.release(h);
        }
        Ok(())
    }

    /// Start an fsync of every record written so far on a blocking thread; what is held now is
    /// released when it ends ([`Run::end_sync`]). A store that cannot sync off the run's thread
    /// (a cluster backend) syncs here and returns None.
    fn begin_sync(&mut self) -> Result<Option<tokio::task::JoinHandle<Result<()>>>> {
        let Some(fsync) = self.journal.store.sync_off_thread()? else {
            self.sync()?;
            return Ok(None);
        };
        self.dirty_since = None;
        self.want_sync = false;
        self.syncing = Some(std::mem::take(&mut self.held));
        Ok(Some(tokio::task::spawn_blocking(fsync)))
    }

    /// The fsync in flight ended: answer the attempts and report the events it covered.
    fn end_sync(&mut self) {
        for h in self.syncing.take().unwrap_or_default() {
            self.release(h);
        }
    }

    fn release(&mut self, h: Held) {
        match h {
            Held::Ack(ack, event) => {
                // Permitted when it asked (a failure later stops the next one); its record is
                // durable now. A lock lost meanwhile (a write found another holder) starts
                // nothing: never two writers.
                if self.lost.is_set() {
                    let _ = ack.send(false);
                } else {
                    let _ = ack.send(true);
                    self.deliver(event);
                }
            }
            Held::Event(e) => self.deliver(e),
        }
    }

    /// Hand an event to the reporters, once every record written before it is durable (held
    /// until the fsync that covers them otherwise, so reports keep their order).
    fn report(&mut self, e: Event) {
        if self.dirty_since.is_some() {
            self.held.push(Held::Event(e));
        } else if let Some(waiting) = &mut self.syncing {
            waiting.push(Held::Event(e));
        } else {
            self.deliver(e);
        }
    }

    fn deliver(&mut self, e: Event) {
        self.reporter.event(&e);
        self.report.event(&e);
    }

    fn log_path(&self, id: &str) -> PathBuf {
        super::log_path(&self.ws.state_dir, &self.run_id, id)
    }

    /// Act on the dispatcher's decisions: start units, report skips and refusals.
    fn apply(
        &mut self,
        ds: Vec<Decision>,
        shared: &Arc<Shared>,
        signals: &Signals,
        tx: &mpsc::UnboundedSender<Msg>,
        ev: &mpsc::UnboundedSender<Event>,
    ) {
        for d in ds {
            match d {
                Decision::Start(i) => self.start(i, shared, signals, tx, ev),
                Decision::Skip { index, reason } => {
                    let id = self.ws.dag.work[index].id().to_string();
                    self.report(Event::StepSkipped { id, reason });
                }
                Decision::Refuse { index, detail } => {
                    let id = self.ws.dag.work[index].id().to_string();
                    self.tails
                        .insert(id.clone(), (detail.clone(), String::new()));
                    // Refused before it started: its record stays what it was.
                    self.report(Event::StepFinished {
                        id,
                        outcome: "failed".into(),
                        attempts: 0,
                        duration_ms: 0,
                        exit_code: None,
                        log: String::new(),
                        detail,
                        journaled: false,
                    });
                }
                Decision::NeedsConfirmation(i) => {
                    if let Work::Step(u) = &self.ws.dag.work[i] {
                        let (id, description) = (u.id.clone(), u.description.clone());
                        self.report(Event::ConfirmationRequired { id, description });
                    }
                }
                Decision::CancelWaits => signals.cancel_waits(),
            }
        }
    }

    fn start(
        &mut self,
        i: usize,
        shared: &Arc<Shared>,
        signals: &Signals,
        tx: &mpsc::UnboundedSender<Msg>,
        ev: &mpsc::UnboundedSender<Event>,
    ) {
        let w = &self.ws.dag.work[i];
        if self.phases.insert(w.phase().to_string()) {
            self.report(Event::PhaseStarted {
                phase: w.phase().to_string(),
            });
        }
        let ctx = unit::UnitCtx {
            ws_work: w.clone(),
            index: i,
            forced: shared.forced.contains(&i),
            was_interrupted: shared
                .state
                .steps
                .get(w.id())
                .is_some_and(|s| s.outcome == Outcome::Interrupted),
            waits: signals.waits.clone(),
            progress: Default::default(),
            env: shared.env.clone(),
            redactor: shared.redactor.clone(),
            clusters: shared.clusters.clone(),
            cancel: signals.cancel.clone(),
            log: self.log_path(w.id()),
            tx: tx.clone(),
            events: ev.clone(),
        };
        tokio::spawn(unit::run_unit(ctx));
    }

    /// An attempt asks to start: write its record (made durable with the batch before the answer
    /// goes out: write-ahead). Returns what to do once the batch is durable.
    fn on_started(
        &mut self,
        disp: &Dispatcher,
        index: usize,
        attempt: u32,
        log: String,
        ack: tokio::sync::oneshot::Sender<bool>,
    ) -> Result<Option<After>> {
        if !disp.permit(index) {
            let _ = ack.send(false);
            return Ok(None);
        }
        let w = &self.ws.dag.work[index];
        let (cluster, node) = match w {
            Work::Step(u) => (u.cluster.clone(), u.node.clone()),
            Work::Gate(_) => (None, None),
        };
        let event = Event::StepStarted {
            id: w.id().to_string(),
            phase: w.phase().to_string(),
            cluster,
            node,
            attempt,
            log,
        };
        self.write(&event)?;
        Ok(Some(After::Started(ack, event)))
    }

    /// A unit ended: write its record. Returns what to do once the batch is durable.
    fn on_done(&mut self, disp: &mut Dispatcher, r: UnitResult) -> Result<After> {
        let ended = match (r.not_started, r.outcome) {
            (true, _) => Ended::NotStarted,
            (_, Outcome::Done) => Ended::Done,
            (_, Outcome::Satisfied) => Ended::Satisfied,
            (_, Outcome::Failed) => Ended::Failed,
            (_, Outcome::Interrupted) => Ended::Interrupted,
        };
        // The dispatcher learns at once (so an attempt later in this batch is refused after a
        // failure); what it decides is carried out once the records are durable.
        let ds = disp.finished(r.index, ended);
        if r.not_started {
            return Ok(After::Finished(r, ds));
        }
        self.write(&finished_event(&self.ws.dag.work[r.index], &r))?;
        Ok(After::Finished(r, ds))
    }

    /// Report a finished unit (delivered once its record is durable).
    fn report_finished(&mut self, r: UnitResult) {
        let w = &self.ws.dag.work[r.index];
        let id = w.id().to_string();
        if r.not_started {
            self.report(Event::StepSkipped {
                id,
                reason: r.detail.clone(),
            });
            return;
        }
        let gate = matches!(w, Work::Gate(_)).then(|| w.phase().to_string());
        self.report(finished_event(w, &r));
        if let Some(phase) = gate {
            let passed = r.outcome.is_done();
            self.report(Event::GateFinished {
                phase: phase.clone(),
                passed,
            });
            if passed {
                self.migrate_after(&phase);
            }
        }
        if r.outcome == Outcome::Failed {
            self.tails.insert(id, (r.tail, r.log));
        }
    }

    /// Every message that is waiting, as one batch: records written; one fsync if an attempt
    /// waits to start (write-ahead), else the records wait for the next one (group commit, at
    /// most [`GROUP_COMMIT_WINDOW`]); then the answers and the dispatcher's next decisions. Events
    /// reach the reporters only once the records before them are durable.
    fn on_batch(
        &mut self,
        disp: &mut Dispatcher,
        batch: Vec<Msg>,
        shared: &Arc<Shared>,
        signals: &Signals,
        tx: &mpsc::UnboundedSender<Msg>,
        ev: &mpsc::UnboundedSender<Event>,
    ) -> Result<()> {
        let mut after = Vec::new();
        for msg in batch {
            match msg {
                Msg::Started {
                    index,
                    attempt,
                    log,
                    ack,
                } => after.extend(self.on_started(disp, index, attempt, log, ack)?),
                Msg::Done(r) => after.push(self.on_done(disp, r)?),
                Msg::Spawned { index, pgid } => {
                    let id = self.ws.dag.work[index].id().to_string();
                    let e = Event::StepSpawned { id, pgid };
                    self.write(&e)?;
                    after.push(After::Report(e));
                }
            }
        }
        for a in after {
            match a {
                After::Started(ack, event) => {
                    // Answered once its record is durable: by the next fsync, which starts as
                    // soon as none is in flight (write-ahead without stalling the other units).
                    self.want_sync = true;
                    if self.dirty_since.is_some() {
                        self.held.push(Held::Ack(ack, event));
                    } else if let Some(waiting) = &mut self.syncing {
                        waiting.push(Held::Ack(ack, event));
                    } else {
                        self.release(Held::Ack(ack, event));
                    }
                }
                After::Report(e) => self.report(e),
                After::Finished(r, ds) => {
                    self.report_finished(r);
                    self.apply(ds, shared, signals, tx, ev);
                }
            }
        }
        Ok(())
    }

    /// `state: { backend: kubernetes, after: <phase> }`: once that phase's gate has passed, the
    /// state moves into the cluster and the run goes on writing there. A failure to move is said
    /// and the run goes on with the local state (the next run tries again).
    fn migrate_after(&mut self, phase: &str) {
        let plan = &self.ws.spec.plan;
        let wanted = plan
            .state
            .as_ref()
            .and_then(|s| s.after.as_ref())
            .is_some_and(|a| a.value == phase);
        let state_dir = &self.ws.state_dir;
        if !wanted
            || crate::state::backend::pointer(state_dir)
                .ok()
                .flatten()
                .is_some()
        {
            return;
        }
        let Some(loc) = crate::state::backend::location(plan, state_dir) else {
            return;
        };
        let (lost, me) = (self.lost.clone(), self.me.clone());
        let moved = super::journal::blocking(|| -> Result<crate::state::kube::KubeStore> {
            // Everything so far is durable locally before it is copied.
            self.journal.flush()?;
            crate::state::backend::migrate_to_kubernetes(plan, state_dir, &loc, false, &me, &lost)
        });
        match moved {
            Ok(k) => {
                self.journal.store = Box::new(k);
                self.report(Event::StateMoved {
                    to: format!(
                        "{loc}: phase {phase} passed its gate (state.after); later runs and teammates find it there"
                    ),
                });
            }
            Err(e) => eprintln!(
                "warning: the state stays local for now: moving it to {loc} failed: {e:#}"
            ),
        }
    }

    /// Drive the dispatcher until the run is over.
    pub async fn drive(
        &mut self,
        disp: &mut Dispatcher,
        shared: Arc<Shared>,
        signals: &Signals,
    ) -> Result<()> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
        let mut cancel = signals.cancel.clone();
        let lost = self.lost.clone();
        let mut lost_seen = false;
        // The fsync in flight, if any.
        let mut fsync: Option<tokio::task::JoinHandle<Result<()>>> = None;
        loop {
            if signals.cancel.level() > 0 {
                disp.interrupt();
            }
            if fsync.is_none() && self.want_sync {
                fsync = self.begin_sync()?;
            }
            let ds = disp.decide();
            self.apply(ds, &shared, signals, &tx, &ev_tx);
            if disp.is_over() {
                break;
            }
            tokio::select! {
                Some(msg) = rx.recv() => {
                    let mut batch = vec![msg];
                    while let Ok(m) = rx.try_recv() {
                        batch.push(m);
                    }
                    // Events a unit sent before its messages come first.
                    while let Ok(e) = ev_rx.try_recv() {
                        self.report(e);
                    }
                    self.on_batch(disp, batch, &shared, signals, &tx, &ev_tx)?;
                }
                Some(e) = ev_rx.recv() => self.report(e),
                _ = super::action::interrupted(&mut cancel), if cancel.level() == 0 => disp.interrupt(),
                _ = lost.wait(), if !lost_seen => {
                    // Never two writers: start nothing more; what runs may finish and is recorded.
                    lost_seen = true;
                    self.report(Event::LockLost { reason: lost.reason() });
                    disp.stop();
                    signals.cancel_waits();
                }
                done = async { fsync.as_mut().expect("in flight").await }, if fsync.is_some() => {
                    fsync = None;
                    done.map_err(|e| color_eyre::eyre::eyre!("the journal's fsync: {e}"))??;
                    self.end_sync();
                }
                _ = tokio::time::sleep_until(self.commit_deadline()), if self.dirty_since.is_some() && fsync.is_none() => {
                    fsync = self.begin_sync()?;
                }
            }
        }
        if let Some(f) = fsync.take() {
            f.await
                .map_err(|e| color_eyre::eyre::eyre!("the journal's fsync: {e}"))??;
            self.end_sync();
        }
        while let Ok(e) = ev_rx.try_recv() {
            self.report(e);
        }
        self.sync()
    }

    /// When the records written so far must be durable at the latest.
    fn commit_deadline(&self) -> tokio::time::Instant {
        let since = self.dirty_since.unwrap_or_else(Instant::now);
        tokio::time::Instant::from_std(since + GROUP_COMMIT_WINDOW)
    }
}

/// The `step-finished` event of a unit that ran (its check, its action, or both).
fn finished_event(w: &Work, r: &UnitResult) -> Event {
    Event::StepFinished {
        id: w.id().to_string(),
        outcome: r.outcome.as_str().into(),
        attempts: r.attempts,
        duration_ms: r.duration.as_millis() as u64,
        exit_code: r.exit_code,
        log: r.log.clone(),
        detail: r.detail.clone(),
        journaled: true,
    }
}
