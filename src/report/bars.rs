//! The terminal reporter: one spinner line per running step with its elapsed time, and an overall
//! progress bar.

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Event, Reporter, first_line, outcome_word};

pub struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    running: HashMap<String, ProgressBar>,
}

impl Bars {
    pub fn new() -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} steps · {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        overall.set_prefix("bootstrap");
        Bars {
            multi,
            overall,
            running: HashMap::new(),
        }
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for Bars {
    fn event(&mut self, e: &Event) {
        match e {
            Event::RunStarted { steps, .. } => self.overall.set_length(*steps as u64),
            Event::StepStarted { id, attempt, .. } => {
                let pb = self.running.remove(id).unwrap_or_else(|| {
                    let pb = self
                        .multi
                        .insert_before(&self.overall, ProgressBar::new_spinner());
                    pb.set_style(
                        ProgressStyle::with_template("  {spinner} {msg} {elapsed:.dim}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    pb.enable_steady_tick(Duration::from_millis(120));
                    pb
                });
                pb.set_message(if *attempt > 1 {
                    format!("{id} (attempt {attempt})")
                } else {
                    id.clone()
                });
                self.running.insert(id.clone(), pb);
            }
            Event::StepSkipped { id, reason } => {
                self.overall.inc(1);
                let _ = self.multi.println(format!("  ↷ {id}: {reason}"));
            }
            Event::AttemptFailed {
                id,
                attempt,
                detail,
                ..
            } => {
                let _ = self.multi.println(format!(
                    "  ! {id}: attempt {attempt}: {}",
                    first_line(detail)
                ));
            }
            Event::StepFinished {
                id,
                outcome,
                duration_ms,
                ..
            } => {
                if let Some(pb) = self.running.remove(id) {
                    pb.finish_and_clear();
                }
                self.overall.inc(1);
                let mark = if outcome == "failed" { "✗" } else { "✔" };
                let _ = self.multi.println(format!(
                    "  {mark} {id} {} ({:.1}s)",
                    outcome_word(outcome),
                    *duration_ms as f64 / 1000.0
                ));
            }
            Event::ConfirmationRequired { id, .. } => {
                let _ = self
                    .multi
                    .println(format!("  ⏸ {id} needs confirmation: run again with --yes"));
            }
            Event::GateItem {
                item,
                passed,
                detail,
                ..
            } => {
                let _ = self.multi.println(if super::is_manual(detail) {
                    format!(
                        "    ☐ {item} (manual): {}",
                        first_line(detail.trim_start_matches(super::MANUAL))
                    )
                } else if *passed {
                    format!("    ☑ {item}")
                } else {
                    format!("    ☒ {item}: {}", first_line(detail))
                });
            }
            Event::GateFinished { phase, passed } => {
                let _ = self.multi.println(format!(
                    "  gate {phase}: {}",
                    if *passed { "passed" } else { "FAILED" }
                ));
            }
            Event::RunFinished { .. } => self.finish(),
            _ => {}
        }
    }
    fn finish(&mut self) {
        for (_, pb) in self.running.drain() {
            pb.finish_and_clear();
        }
        self.overall.finish_and_clear();
    }
}
