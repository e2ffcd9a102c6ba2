//! The markdown run report, written to the state directory after every run: who ran it where and
//! when, the outcome and duration, what ran, what was skipped and why, durations, the gate evidence,
//! and the tail of each failure's log.
//!
//! The report is (re)written when the `run-finished` event arrives, so it always carries the outcome;
//! it is then also appended to `$GITHUB_STEP_SUMMARY` when that is set.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::{Event, Reporter};

/// What a run was asked to do, known before it starts (set by `run` and `resume`): the plan's and
/// phases' fingerprints, and every selected unit in wave order, so the report lists steps that
/// never started too.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    pub plan_fingerprint: String,
    pub phases_fingerprint: String,
    /// Unit ids in wave order.
    pub order: Vec<String>,
}

#[derive(Default)]
pub struct MarkdownReport {
    events: Vec<Event>,
    /// Failure tails by step id (filled by the engine).
    pub tails: std::collections::BTreeMap<String, String>,
    /// Where the report goes, once known (`write`, or `in_dir`).
    state_dir: Option<PathBuf>,
    tally: super::Tally,
    /// What the run was asked to do (handed in by the command that starts it).
    context: Option<RunContext>,
}

impl MarkdownReport {
    pub fn new() -> Self {
        Self::default()
    }

    /// A report that knows what the run was asked to do (it lists steps that never started).
    pub fn with_context(context: RunContext) -> Self {
        MarkdownReport {
            context: Some(context),
            ..Self::default()
        }
    }

    /// A report that writes itself to `state_dir` when the run finishes.
    pub fn in_dir(state_dir: &Path) -> Self {
        MarkdownReport {
            state_dir: Some(state_dir.to_path_buf()),
            ..Self::default()
        }
    }

    /// `reports/<run id>.md` under the state dir (the path the `run-finished` event names).
    pub fn path_for(state_dir: &Path, run_id: &str) -> PathBuf {
        state_dir.join("reports").join(format!("{run_id}.md"))
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let mut run_id = String::new();
        let ctx = self.context.clone();
        for e in &self.events {
            if let Event::RunStarted {
                run_id: r,
                plan,
                lab,
                steps,
                ..
            } = e
            {
                run_id = r.clone();
                let _ = writeln!(
                    o,
                    "# Run {r}\n\n- Plan: `{plan}`{}\n- Steps selected: {steps}\n- By: {} on {} (its step logs stay on that machine)\n- Tool: bootstrap {}\n",
                    if *lab { " (lab)" } else { "" },
                    std::env::var("USER")
                        .or_else(|_| std::env::var("LOGNAME"))
                        .unwrap_or_else(|_| "unknown".into()),
                    crate::state::hostname(),
                    crate::version::LONG,
                );
                if let Some(c) = &ctx {
                    let _ = writeln!(
                        o,
                        "- Plan fingerprint: `{}`\n- Phases fingerprint: `{}`\n",
                        c.plan_fingerprint, c.phases_fingerprint
                    );
                }
            }
        }
        if let Some(Event::RunFinished {
            outcome,
            duration_ms,
            failed,
            ..
        }) = self
            .events
            .iter()
            .rev()
            .find(|e| matches!(e, Event::RunFinished { .. }))
        {
            let _ = writeln!(
                o,
                "**Outcome: {outcome}** in {}. {}.{}\n",
                super::summary::duration(*duration_ms),
                self.tally.counts(),
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(
                        " Failed: {}.",
                        failed
                            .iter()
                            .map(|f| format!("`{f}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
        }
        let _ = writeln!(
            o,
            "## Steps\n\n| Step | Outcome | Attempts | Duration | Exit | Log |\n|---|---|---|---|---|---|"
        );
        // One row per unit (its last word), in wave order when the run's context is known.
        let mut rows: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
        let mut seen: Vec<&str> = Vec::new();
        for e in &self.events {
            let (id, row) = match e {
                Event::StepFinished {
                    id,
                    outcome,
                    attempts,
                    duration_ms,
                    exit_code,
                    log,
                    ..
                } => (
                    id,
                    format!(
                        "| `{id}` | {outcome} | {attempts} | {} | {} | `{log}` |",
                        super::summary::duration(*duration_ms),
                        exit_code
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "–".into())
                    ),
                ),
                // A passing check is announced as a skip, then finished as `satisfied`.
                Event::StepSkipped { id, reason } if !reason.starts_with("check passed") => (
                    id,
                    format!(
                        "| `{id}` | skipped: {} | 0 | – | – | – |",
                        reason.replace('|', "\\|")
                    ),
                ),
                Event::ConfirmationRequired { id, .. } => (
                    id,
                    format!("| `{id}` | not run: needs confirmation (--yes) | 0 | – | – | – |"),
                ),
                _ => continue,
            };
            if rows.insert(id.as_str(), row).is_none() {
                seen.push(id.as_str());
            }
        }
        let order: Vec<&str> = match &ctx {
            Some(c) if !c.order.is_empty() => c.order.iter().map(String::as_str).collect(),
            _ => seen.clone(),
        };
        for id in &order {
            match rows.get(id) {
                Some(r) => {
                    let _ = writeln!(o, "{r}");
                }
                None => {
                    let _ = writeln!(o, "| `{id}` | not started | 0 | – | – | – |");
                }
            }
        }
        // Anything the context did not list (it should not happen) still shows.
        for id in seen.iter().filter(|id| !order.contains(id)) {
            let _ = writeln!(o, "{}", rows[id]);
        }
        let gate_events: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| matches!(e, Event::GateItem { .. } | Event::GateFinished { .. }))
            .collect();
        if !gate_events.is_empty() {
            let _ = writeln!(o, "\n## Gates\n");
            for e in gate_events {
                match e {
                    Event::GateItem {
                        item,
                        text,
                        passed,
                        detail,
                        ..
                    } => {
                        // A manual item is listed unticked: bootstrap did not check it.
                        let manual = super::is_manual(detail);
                        let _ = writeln!(
                            o,
                            "- [{}] `{item}`{} {text}: {}",
                            if *passed && !manual { "x" } else { " " },
                            if manual { " (manual)" } else { "" },
                            detail.lines().next().unwrap_or("")
                        );
                    }
                    Event::GateFinished { phase, passed } => {
                        let _ = writeln!(
                            o,
                            "\n**Gate `{phase}`: {}**\n",
                            if *passed { "passed" } else { "failed" }
                        );
                    }
                    _ => {}
                }
            }
        }
        let failures: Vec<(&String, &String)> = self
            .events
            .iter()
            .filter_map(|e| match e {
                Event::StepFinished {
                    id,
                    outcome,
                    detail,
                    ..
                } if outcome == "failed" || outcome == "interrupted" => Some((id, detail)),
                _ => None,
            })
            .collect();
        if !failures.is_empty() {
            let _ = writeln!(o, "\n## Failures\n");
            for (id, detail) in failures {
                let _ = writeln!(o, "### `{id}`\n\n{}\n", detail.lines().next().unwrap_or(""));
                if let Some(tail) = self.tails.get(id) {
                    let _ = writeln!(o, "```\n{tail}\n```\n");
                }
            }
        }
        let _ = run_id;
        o
    }

    /// Write `reports/<run id>.md` and `last-run.md` under the state dir; returns the report path.
    /// The state dir is remembered: the report is written again, complete, on `run-finished`.
    pub fn write(&mut self, state_dir: &Path, run_id: &str) -> std::io::Result<PathBuf> {
        self.state_dir = Some(state_dir.to_path_buf());
        self.write_files(state_dir, run_id)
    }

    fn write_files(&self, state_dir: &Path, run_id: &str) -> std::io::Result<PathBuf> {
        let path = Self::path_for(state_dir, run_id);
        std::fs::create_dir_all(state_dir.join("reports"))?;
        let text = self.render();
        std::fs::write(&path, &text)?;
        std::fs::write(state_dir.join("last-run.md"), &text)?;
        Ok(path)
    }
}

impl Reporter for MarkdownReport {
    fn event(&mut self, e: &Event) {
        if matches!(e, Event::Output { .. } | Event::Heartbeat { .. }) {
            return;
        }
        self.tally.add(e);
        // Only what the report renders is kept (a run's memory must not grow with every line).
        if matches!(
            e,
            Event::RunStarted { .. }
                | Event::RunFinished { .. }
                | Event::StepFinished { .. }
                | Event::StepSkipped { .. }
                | Event::ConfirmationRequired { .. }
                | Event::GateItem { .. }
                | Event::GateFinished { .. }
        ) {
            self.events.push(e.clone());
        }
        if let (Event::RunFinished { run_id, .. }, Some(dir)) = (e, self.state_dir.clone()) {
            if let Err(err) = self.write_files(&dir, run_id) {
                eprintln!("warning: cannot write the run report: {err}");
            }
            // GitHub Actions shows this file on the run's page.
            if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|v| !v.is_empty())
            {
                use std::io::Write as _;
                let text = self.render();
                let appended = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&summary)
                    .and_then(|mut f| f.write_all(format!("{text}\n").as_bytes()));
                if let Err(err) = appended {
                    eprintln!("warning: cannot append to $GITHUB_STEP_SUMMARY: {err}");
                }
            }
        }
    }
}
