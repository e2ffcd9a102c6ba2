//! The markdown run report, written to the state directory after every run: what ran, what was
//! skipped and why, durations, the gate evidence, and the tail of each failure's log.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::{Event, Reporter};

#[derive(Default)]
pub struct MarkdownReport {
    events: Vec<Event>,
    /// Failure tails by step id (filled by the engine).
    pub tails: std::collections::BTreeMap<String, String>,
}

impl MarkdownReport {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let mut run_id = String::new();
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
                    "# Run {r}\n\n- Plan: `{plan}`{}\n- Steps selected: {steps}\n",
                    if *lab { " (lab)" } else { "" }
                );
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
                "**Outcome: {outcome}** in {:.1}s.{}\n",
                *duration_ms as f64 / 1000.0,
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
        for e in &self.events {
            match e {
                Event::StepFinished {
                    id,
                    outcome,
                    attempts,
                    duration_ms,
                    exit_code,
                    log,
                    ..
                } => {
                    let _ = writeln!(
                        o,
                        "| `{id}` | {outcome} | {attempts} | {:.1}s | {} | `{log}` |",
                        *duration_ms as f64 / 1000.0,
                        exit_code
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "–".into())
                    );
                }
                Event::StepSkipped { id, reason } => {
                    let _ = writeln!(
                        o,
                        "| `{id}` | skipped: {} | 0 | – | – | – |",
                        reason.replace('|', "\\|")
                    );
                }
                Event::ConfirmationRequired { id, .. } => {
                    let _ = writeln!(
                        o,
                        "| `{id}` | not run: needs confirmation (--yes) | 0 | – | – | – |"
                    );
                }
                _ => {}
            }
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
    pub fn write(&self, state_dir: &Path, run_id: &str) -> std::io::Result<PathBuf> {
        let dir = state_dir.join("reports");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{run_id}.md"));
        let text = self.render();
        std::fs::write(&path, &text)?;
        std::fs::write(state_dir.join("last-run.md"), &text)?;
        Ok(path)
    }
}

impl Reporter for MarkdownReport {
    fn event(&mut self, e: &Event) {
        if !matches!(e, Event::Output { .. }) {
            self.events.push(e.clone());
        }
    }
}
