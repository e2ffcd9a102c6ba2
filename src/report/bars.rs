//! The terminal reporter: a header, one spinner line per running step with its elapsed time, an
//! overall progress bar, and the closing summary line.
//!
//! It follows the process's one colour decision ([`crate::color`]): no SGR sequence without colour,
//! plain lines when the terminal cannot redraw (`TERM=dumb`), and only failures and the summary with
//! `-q`.

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Event, Plain, Reporter, Tally, first_line, outcome_word, summary};

pub struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    running: HashMap<String, ProgressBar>,
    color: bool,
    quiet: bool,
    /// The terminal cannot redraw: plain lines instead.
    plain: Option<Plain>,
    /// The counts for the closing line.
    tally: Tally,
}

impl Bars {
    pub fn new() -> Bars {
        let d = crate::color::get();
        let draw = if d.quiet || !d.live {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let multi = MultiProgress::with_draw_target(draw);
        // Drawn from `run-started` on, when its length is known.
        let overall = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        let template = if d.stderr {
            "{prefix:.bold} [{bar:30}] {pos}/{len} steps · {elapsed}"
        } else {
            "{prefix} [{bar:30}] {pos}/{len} steps · {elapsed}"
        };
        overall.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        overall.set_prefix("bootstrap");
        Bars {
            multi,
            overall,
            running: HashMap::new(),
            color: d.stderr,
            quiet: d.quiet,
            plain: (!d.live).then(|| Plain::new(d.verbose, d.quiet)),
            tally: Tally::default(),
        }
    }

    /// A line above the bars (or straight to stderr when they are hidden).
    fn println(&self, line: String) {
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }

    fn paint(&self, style: anstyle::Style, text: &str) -> String {
        crate::color::paint(self.color, style, text)
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

fn red() -> anstyle::Style {
    anstyle::Style::new()
        .fg_color(Some(anstyle::AnsiColor::Red.into()))
        .bold()
}
fn green() -> anstyle::Style {
    anstyle::Style::new().fg_color(Some(anstyle::AnsiColor::Green.into()))
}
fn bold() -> anstyle::Style {
    anstyle::Style::new().bold()
}

impl Reporter for Bars {
    fn event(&mut self, e: &Event) {
        if let Some(p) = &mut self.plain {
            return p.event(e);
        }
        self.tally.add(e);
        let quiet = self.quiet;
        match e {
            Event::RunStarted { steps, .. } => {
                if !quiet && let Some(h) = summary::header(e) {
                    self.println(self.paint(bold(), &h));
                }
                self.overall.set_length(*steps as u64);
                self.overall = self.multi.add(self.overall.clone());
            }
            Event::StepStarted { id, attempt, .. } => {
                let color = self.color;
                let pb = self.running.remove(id).unwrap_or_else(|| {
                    let pb = self
                        .multi
                        .insert_before(&self.overall, ProgressBar::new_spinner());
                    let t = if color {
                        "  {spinner} {msg} {elapsed:.dim}"
                    } else {
                        "  {spinner} {msg} {elapsed}"
                    };
                    pb.set_style(
                        ProgressStyle::with_template(t)
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
            Event::Heartbeat {
                id, waiting_for, ..
            } => {
                if let Some(pb) = self.running.get(id) {
                    pb.set_message(format!("{id}: {}", first_line(waiting_for)));
                }
            }
            Event::StepSkipped { id, reason } => {
                self.overall.inc(1);
                if !quiet {
                    self.println(format!("  ↷ {id}: {reason}"));
                }
            }
            Event::AttemptFailed {
                id,
                attempt,
                detail,
                ..
            } => {
                self.println(format!(
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
                let failed = outcome == "failed";
                if quiet && !failed {
                    return;
                }
                let mark = if failed {
                    self.paint(red(), "✗")
                } else {
                    self.paint(green(), "✔")
                };
                self.println(format!(
                    "  {mark} {id} {} ({})",
                    outcome_word(outcome),
                    summary::duration(*duration_ms)
                ));
            }
            Event::ConfirmationRequired { id, .. } => {
                self.println(format!("  ⏸ {id} needs confirmation: run again with --yes"));
            }
            Event::GateItem {
                item,
                passed,
                detail,
                ..
            } => {
                if super::is_manual(detail) {
                    // A manual item is never shown as checked.
                    self.println(format!(
                        "    ☐ {item} (manual): {}",
                        first_line(detail.trim_start_matches(super::MANUAL))
                    ));
                } else if *passed && !quiet {
                    self.println(format!("    ☑ {item}"));
                } else if !*passed {
                    self.println(format!("    ☒ {item}: {}", first_line(detail)));
                }
            }
            Event::GateFinished { phase, passed } => {
                if *passed && !quiet {
                    self.println(format!("  gate {phase}: passed"));
                } else if !*passed {
                    self.println(format!("  gate {phase}: {}", self.paint(red(), "FAILED")));
                }
            }
            Event::StateMoved { to } if !quiet => {
                self.println(format!("  state moved to {to}"));
            }
            Event::LockLost { reason } => {
                self.println(format!(
                    "  {} {reason}; starting nothing new",
                    self.paint(red(), "lock lost:")
                ));
            }
            Event::RunFinished { outcome, .. } => {
                self.finish();
                if let Some(line) = summary::line(e, &self.tally) {
                    let style = if outcome == "succeeded" {
                        green()
                    } else {
                        red()
                    };
                    eprintln!("{}", self.paint(style, &line));
                }
            }
            _ => {}
        }
    }
    fn finish(&mut self) {
        if self.plain.is_some() {
            return;
        }
        for (_, pb) in self.running.drain() {
            pb.finish_and_clear();
        }
        self.overall.finish_and_clear();
    }
    fn suspend(&mut self, f: &mut dyn FnMut()) {
        if self.plain.is_some() {
            f()
        } else {
            self.multi.suspend(f)
        }
    }
}
