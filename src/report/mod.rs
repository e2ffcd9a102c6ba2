//! Events the engine emits, and the reporters that render them: terminal bars, plain timestamped
//! lines, JSON lines, and the markdown run report.
//!
//! Owns presentation only. It never decides outcomes: the engine emits, reporters render.

mod bars;
pub mod junit;
mod markdown;
pub mod summary;

use std::io::Write;

use serde::Serialize;

pub use bars::Bars;
pub use junit::JunitReport;
pub use markdown::{MarkdownReport, RunContext};
pub use summary::Tally;

/// Version of the JSON event shape (`--output json`), bumped on incompatible changes.
pub const EVENT_SCHEMA: u32 = 1;

/// Something that happened in a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    RunStarted {
        run_id: String,
        plan: String,
        lab: bool,
        steps: usize,
        concurrency: usize,
        resumed: bool,
    },
    PhaseStarted {
        phase: String,
    },
    StepStarted {
        id: String,
        phase: String,
        cluster: Option<String>,
        node: Option<String>,
        attempt: u32,
        /// Where the attempt's output goes.
        log: String,
    },
    /// A command of a running step started in its own process group (journaled, so that a run
    /// resumed after `kill -9` can stop what the dead run left behind).
    StepSpawned {
        id: String,
        pgid: u32,
    },
    /// The step did not run: its check passed, or it was recorded done and unchanged.
    StepSkipped {
        id: String,
        reason: String,
    },
    Output {
        id: String,
        line: String,
    },
    AttemptFailed {
        id: String,
        attempt: u32,
        transient: bool,
        detail: String,
        retry_in_ms: Option<u64>,
    },
    StepFinished {
        id: String,
        outcome: String,
        attempts: u32,
        duration_ms: u64,
        exit_code: Option<i32>,
        log: String,
        detail: String,
        /// Whether the journal records it: not for a step the run refused to start (a changed
        /// irreversible step keeps the record of what it did). Not part of the JSON event.
        #[serde(skip)]
        journaled: bool,
    },
    /// A long step is still at work (every 30 s by default): what it is waiting for, and for how long.
    Heartbeat {
        id: String,
        elapsed_ms: u64,
        waiting_for: String,
    },
    /// A confirm step could not be confirmed (no terminal and no --yes): the run stops before it.
    ConfirmationRequired {
        id: String,
        description: String,
    },
    /// Every selected step is done and unchanged: the run did not start (nothing was written).
    NothingToDo {
        steps: usize,
        last_run: Option<String>,
    },
    GateItem {
        phase: String,
        item: String,
        text: String,
        passed: bool,
        detail: String,
    },
    GateFinished {
        phase: String,
        passed: bool,
    },
    RunFinished {
        run_id: String,
        outcome: String,
        duration_ms: u64,
        failed: Vec<String>,
        report: String,
    },
    /// The state moved to a cluster (`state.after`): the run's later records are written there.
    StateMoved {
        to: String,
    },
    /// The run lost its lock in a cluster backend: nothing new starts; what runs finishes.
    LockLost {
        reason: String,
    },
}

/// An event with its envelope (`schema`, `ts`), as written by the JSON reporter.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub schema: u32,
    pub ts: String,
    #[serde(flatten)]
    pub event: &'a Event,
}

pub trait Reporter: Send {
    fn event(&mut self, e: &Event);
    fn finish(&mut self) {}
    /// Run `f` (a prompt) with the reporter's live display put away, then redraw it.
    fn suspend(&mut self, f: &mut dyn FnMut()) {
        f()
    }
}

/// One JSON object per event on stdout. `run-finished` also carries `counts` (see docs/engine.md).
#[derive(Default)]
pub struct JsonLines {
    tally: Tally,
}

impl Reporter for JsonLines {
    fn event(&mut self, e: &Event) {
        self.tally.add(e);
        let env = Envelope {
            schema: EVENT_SCHEMA,
            ts: crate::state::now(),
            event: e,
        };
        let value = serde_json::to_value(&env).map(|mut v| {
            if matches!(e, Event::RunFinished { .. })
                && let (Some(o), Ok(c)) =
                    (v.as_object_mut(), serde_json::to_value(self.tally.closed()))
            {
                o.insert("counts".into(), c);
            }
            v
        });
        if let Ok(line) = value.and_then(|v| serde_json::to_string(&v)) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// Plain timestamped lines on stderr (CI, or not a terminal).
pub struct Plain {
    verbose: bool,
    quiet: bool,
    /// The counts for the closing line.
    tally: Tally,
}

impl Plain {
    pub fn new(verbose: bool, quiet: bool) -> Plain {
        Plain {
            verbose,
            quiet,
            tally: Tally::default(),
        }
    }
}

fn hms() -> String {
    jiff::Timestamp::now().strftime("%H:%M:%SZ").to_string()
}

impl Reporter for Plain {
    fn event(&mut self, e: &Event) {
        self.tally.add(e);
        let line = match e {
            Event::RunStarted { .. } => summary::header(e),
            Event::PhaseStarted { phase } => Some(format!("phase {phase}")),
            Event::StepSpawned { .. } => None,
            Event::Heartbeat {
                id,
                elapsed_ms,
                waiting_for,
            } => Some(format!(
                "still  {id} ({}): {}",
                humantime::format_duration(std::time::Duration::from_secs(elapsed_ms / 1000)),
                first_line(waiting_for)
            )),
            Event::StepStarted { id, attempt, .. } => Some(if *attempt > 1 {
                format!("start  {id} (attempt {attempt})")
            } else {
                format!("start  {id}")
            }),
            Event::StepSkipped { id, reason } => {
                (!self.quiet).then(|| format!("skip   {id}: {reason}"))
            }
            Event::Output { id, line } => self.verbose.then(|| format!("       {id} | {line}")),
            Event::AttemptFailed {
                id,
                attempt,
                transient,
                detail,
                retry_in_ms,
            } => Some(match (transient, retry_in_ms) {
                (true, Some(ms)) => format!(
                    "retry  {id}: attempt {attempt} failed ({}); again in {:.1}s",
                    first_line(detail),
                    *ms as f64 / 1000.0
                ),
                _ => format!(
                    "fail   {id}: attempt {attempt} failed ({})",
                    first_line(detail)
                ),
            }),
            Event::StepFinished {
                id,
                outcome,
                duration_ms,
                ..
            } => Some(format!(
                "{:<6} {id} ({:.1}s)",
                outcome_word(outcome),
                *duration_ms as f64 / 1000.0
            )),
            Event::ConfirmationRequired { id, description } => Some(format!(
                "stop   {id} needs confirmation ({description}): run again with --yes, or on a terminal"
            )),
            Event::GateItem {
                item,
                passed,
                detail,
                ..
            } => {
                if is_manual(detail) {
                    Some(format!(
                        "  ☐ {item} (manual): {}",
                        first_line(detail.trim_start_matches(MANUAL))
                    ))
                } else if *passed {
                    (!self.quiet).then(|| format!("  ✔ {item}"))
                } else {
                    Some(format!("  ✗ {item}: {}", first_line(detail)))
                }
            }
            Event::GateFinished { phase, passed } => Some(format!(
                "gate   {phase}: {}",
                if *passed { "passed" } else { "FAILED" }
            )),
            Event::NothingToDo { steps, .. } => Some(format!("nothing to do: {steps} steps done")),
            Event::StateMoved { to } => Some(format!("state  moved to {to}")),
            Event::LockLost { reason } => {
                Some(format!("lock   lost: {reason}; starting nothing new"))
            }
            Event::RunFinished { .. } => summary::line(e, &self.tally),
        };
        if let Some(l) = line {
            if self.quiet
                && !matches!(
                    e,
                    Event::RunFinished { .. }
                        | Event::AttemptFailed { .. }
                        | Event::LockLost { .. }
                        | Event::GateFinished { passed: false, .. }
                )
                && !l.starts_with("fail")
                && !l.starts_with("  ✗")
            {
                return;
            }
            eprintln!("{} {l}", hms());
        }
    }
}

pub fn outcome_word(o: &str) -> &str {
    match o {
        "done" => "done",
        "satisfied" => "ok",
        "failed" => "FAILED",
        "interrupted" => "intr",
        other => other,
    }
}

/// Text without terminal escape sequences (colours, cursor moves): a failure summary quotes a
/// tool's output, and a raw line full of `ESC[…m` is not a summary.
pub fn strip_ansi(s: &str) -> String {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(
            r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]",
        )
        .expect("static regex")
    });
    re.replace_all(s, "").into_owned()
}

pub fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or("")
}

/// Fan an event out to several reporters.
pub struct Fanout(pub Vec<Box<dyn Reporter>>);

impl Reporter for Fanout {
    fn event(&mut self, e: &Event) {
        for r in &mut self.0 {
            r.event(e);
        }
    }
    fn finish(&mut self) {
        for r in &mut self.0 {
            r.finish();
        }
    }
    fn suspend(&mut self, f: &mut dyn FnMut()) {
        match self.0.first_mut() {
            Some(r) => r.suspend(f),
            None => f(),
        }
    }
}

/// How a manual gate item's detail starts (reporters mark such items as manual, not as checked).
pub const MANUAL: &str = "manual, verify by hand: ";

/// Whether a gate item's detail is a manual item's.
pub fn is_manual(detail: &str) -> bool {
    detail.starts_with(MANUAL)
}
