//! The run's header and its one closing summary line, shared by every reporter: counts of what ran,
//! what a check satisfied, what was skipped as done, what failed and what never started.
//!
//! Owns counting events and the wording of the two lines. It never writes anywhere.

use serde::Serialize;

use super::Event;

/// What a run's events add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Units selected (steps and gates).
    pub selected: usize,
    /// Actions (or gates) that ran and succeeded.
    pub ran: usize,
    /// Steps whose check passed: nothing ran.
    pub satisfied: usize,
    /// Steps recorded done and unchanged: skipped.
    pub skipped: usize,
    pub failed: usize,
    pub interrupted: usize,
    /// Units never started: they need a failed step, wait for a confirmation, or the run stopped first.
    pub not_started: usize,
}

impl Tally {
    /// Count one event.
    pub fn add(&mut self, e: &Event) {
        match e {
            Event::RunStarted { steps, .. } => self.selected = *steps,
            Event::StepFinished { outcome, .. } => match outcome.as_str() {
                "done" => self.ran += 1,
                "satisfied" => self.satisfied += 1,
                "failed" => self.failed += 1,
                _ => self.interrupted += 1,
            },
            Event::StepSkipped { reason, .. } => {
                // A passing check is announced as a skip, then finished as `satisfied`.
                if reason.starts_with("check passed") {
                    return;
                }
                if is_not_started(reason) {
                    self.not_started += 1
                } else {
                    self.skipped += 1
                }
            }
            _ => {}
        }
    }

    /// Units with no event at all (the run stopped before them) count as not started.
    pub fn closed(&self) -> Tally {
        let mut t = self.clone();
        let seen = t.ran + t.satisfied + t.skipped + t.failed + t.interrupted + t.not_started;
        t.not_started += t.selected.saturating_sub(seen);
        t
    }

    /// `35 steps: 20 ran, 5 satisfied by check, 8 skipped as done, 1 failed, 1 not started`.
    pub fn counts(&self) -> String {
        let t = self.closed();
        let mut parts = vec![
            format!("{} ran", t.ran),
            format!("{} satisfied by check", t.satisfied),
            format!("{} skipped as done", t.skipped),
            format!("{} failed", t.failed),
        ];
        if t.interrupted > 0 {
            parts.push(format!("{} interrupted", t.interrupted));
        }
        parts.push(format!("{} not started", t.not_started));
        format!(
            "{} step{}: {}",
            t.selected,
            if t.selected == 1 { "" } else { "s" },
            parts.join(", ")
        )
    }
}

/// A skip that is not "already done": the step never started (a failure upstream, or the run stopped).
pub fn is_not_started(reason: &str) -> bool {
    reason.starts_with("not run") || reason.starts_with("not started")
}

/// `1m05s`, `4.2s`, `0.3s`.
pub fn duration(ms: u64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let total = ms / 1000;
        let (h, m, sec) = (total / 3600, (total % 3600) / 60, total % 60);
        if h > 0 {
            format!("{h}h{m:02}m{sec:02}s")
        } else {
            format!("{m}m{sec:02}s")
        }
    }
}

/// The header: `Starting run ID on plan P (lab): 35 steps, up to 4 at once`.
pub fn header(e: &Event) -> Option<String> {
    let Event::RunStarted {
        run_id,
        plan,
        lab,
        steps,
        concurrency,
        resumed,
    } = e
    else {
        return None;
    };
    Some(format!(
        "{} run {run_id} on plan {plan}{}: {steps} step{}, up to {concurrency} at once",
        if *resumed { "Resuming" } else { "Starting" },
        if *lab { " (lab)" } else { "" },
        if *steps == 1 { "" } else { "s" },
    ))
}

/// The closing line, in nextest's shape:
/// `Summary [   4.2s] run ID succeeded. 35 steps: 20 ran, … · report: PATH`.
pub fn line(e: &Event, tally: &Tally) -> Option<String> {
    let Event::RunFinished {
        run_id,
        outcome,
        duration_ms,
        report,
        ..
    } = e
    else {
        return None;
    };
    Some(format!(
        "Summary [{:>8}] run {run_id} {outcome}. {}{}",
        duration(*duration_ms),
        tally.counts(),
        if report.is_empty() {
            String::new()
        } else {
            format!(" · report: {report}")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fin(id: &str, outcome: &str) -> Event {
        Event::StepFinished {
            id: id.into(),
            outcome: outcome.into(),
            attempts: 1,
            duration_ms: 1,
            exit_code: None,
            log: String::new(),
            detail: String::new(),
            journaled: true,
        }
    }

    #[test]
    fn counts_every_kind_and_what_never_started() {
        let mut t = Tally::default();
        for e in [
            Event::RunStarted {
                run_id: "r".into(),
                plan: "p".into(),
                lab: false,
                steps: 7,
                concurrency: 1,
                resumed: false,
            },
            fin("a", "done"),
            fin("b", "satisfied"),
            fin("c", "failed"),
            Event::StepSkipped {
                id: "d".into(),
                reason: "done in run x".into(),
            },
            Event::StepSkipped {
                id: "e".into(),
                reason: "not run: it needs a step that failed".into(),
            },
        ] {
            t.add(&e);
        }
        assert_eq!(
            t.counts(),
            "7 steps: 1 ran, 1 satisfied by check, 1 skipped as done, 1 failed, 3 not started"
        );
    }

    #[test]
    fn durations_read_as_time() {
        assert_eq!(duration(4_200), "4.2s");
        assert_eq!(duration(65_000), "1m05s");
        assert_eq!(duration(3_726_000), "1h02m06s");
    }
}
