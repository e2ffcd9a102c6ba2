//! JUnit XML for CI (`run --junit FILE`): each phase is a `<testsuite>`, each step and each gate item
//! a `<testcase>`. Failed steps carry their detail; steps skipped as done or never started are
//! `<skipped>`.
//!
//! Owns the mapping from events to JUnit. It never decides outcomes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::{Event, Reporter};

/// Collects a run's events; writes the file when the run finishes.
pub struct JunitReport {
    path: PathBuf,
    /// Step id → phase id (skip events do not carry the phase).
    phase_of: BTreeMap<String, String>,
    /// Phase order as the plan has it.
    phases: Vec<String>,
    /// Phase → (case name → case), in arrival order.
    cases: BTreeMap<String, Vec<(String, TestCase)>>,
    run_id: String,
    /// Set when writing failed (reported on stderr once).
    pub error: Option<String>,
}

impl JunitReport {
    pub fn new(
        path: PathBuf,
        phases: Vec<String>,
        phase_of: BTreeMap<String, String>,
    ) -> JunitReport {
        JunitReport {
            path,
            phase_of,
            phases,
            cases: BTreeMap::new(),
            run_id: String::new(),
            error: None,
        }
    }

    fn push(&mut self, phase: &str, name: &str, case: TestCase) {
        let v = self.cases.entry(phase.to_string()).or_default();
        v.retain(|(n, _)| n != name);
        v.push((name.to_string(), case));
    }

    fn phase(&self, id: &str) -> String {
        self.phase_of
            .get(id)
            .cloned()
            .or_else(|| id.strip_prefix("gate/").map(String::from))
            .unwrap_or_else(|| "unknown".into())
    }

    /// The XML for what was seen so far.
    pub fn render(&self, duration: Duration) -> String {
        let mut report = Report::new(format!("bootstrap run {}", self.run_id));
        report.set_time(duration);
        let mut order: Vec<&String> = self.phases.iter().collect();
        for p in self.cases.keys() {
            if !order.contains(&p) {
                order.push(p);
            }
        }
        for p in order {
            let Some(cases) = self.cases.get(p) else {
                continue;
            };
            let mut suite = TestSuite::new(p.as_str());
            suite.add_test_cases(cases.iter().map(|(_, c)| c.clone()));
            report.add_test_suite(suite);
        }
        report.to_string().unwrap_or_default()
    }
}

fn case(name: &str, classname: &str, status: TestCaseStatus, ms: u64) -> TestCase {
    let mut c = TestCase::new(name, status);
    c.set_classname(classname);
    c.set_time(Duration::from_millis(ms));
    c
}

impl Reporter for JunitReport {
    fn event(&mut self, e: &Event) {
        match e {
            Event::RunStarted { run_id, .. } => self.run_id = run_id.clone(),
            Event::StepFinished {
                id,
                outcome,
                duration_ms,
                detail,
                log,
                ..
            } => {
                if id.starts_with("gate/") {
                    return; // its items are the cases
                }
                let phase = self.phase(id);
                let status = match outcome.as_str() {
                    "done" | "satisfied" => TestCaseStatus::success(),
                    _ => {
                        let mut s = TestCaseStatus::non_success(if outcome == "failed" {
                            NonSuccessKind::Failure
                        } else {
                            NonSuccessKind::Error
                        });
                        s.set_message(super::first_line(detail));
                        s.set_type(outcome.as_str());
                        s.set_description(format!("{detail}\nlog: {log}"));
                        s
                    }
                };
                let c = case(id, &phase, status, *duration_ms);
                self.push(&phase, id, c);
            }
            Event::StepSkipped { id, reason } => {
                let phase = self.phase(id);
                let mut s = TestCaseStatus::skipped();
                s.set_message(reason.as_str());
                let c = case(id, &phase, s, 0);
                self.push(&phase, id, c);
            }
            Event::ConfirmationRequired { id, .. } => {
                let phase = self.phase(id);
                let mut s = TestCaseStatus::skipped();
                s.set_message("not run: needs confirmation (--yes)");
                let c = case(id, &phase, s, 0);
                self.push(&phase, id, c);
            }
            Event::GateItem {
                phase,
                item,
                text,
                passed,
                detail,
            } => {
                let name = format!("gate/{phase}/{item}");
                let status = if *passed {
                    TestCaseStatus::success()
                } else {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(format!("{text}: {}", super::first_line(detail)));
                    s.set_description(detail.as_str());
                    s
                };
                let c = case(&name, phase, status, 0);
                self.push(phase, &name, c);
            }
            Event::RunFinished { duration_ms, .. } => {
                let xml = self.render(Duration::from_millis(*duration_ms));
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    let _ = std::fs::create_dir_all(dir);
                }
                if let Err(err) = std::fs::write(&self.path, xml) {
                    let msg = format!("cannot write {}: {err}", self.path.display());
                    eprintln!("warning: --junit: {msg}");
                    self.error = Some(msg);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_suites_and_failures_carry_their_detail() {
        let mut j = JunitReport::new(
            PathBuf::from("/nonexistent/x.xml"),
            vec!["foundation".into()],
            [("a".to_string(), "foundation".to_string())].into(),
        );
        j.event(&Event::StepFinished {
            id: "a".into(),
            outcome: "failed".into(),
            attempts: 1,
            duration_ms: 1500,
            exit_code: Some(1),
            log: "l".into(),
            detail: "exit 1: boom".into(),
            journaled: true,
        });
        j.event(&Event::GateItem {
            phase: "foundation".into(),
            item: "nodes".into(),
            text: "Nodes ready".into(),
            passed: true,
            detail: String::new(),
        });
        let xml = j.render(Duration::from_secs(2));
        assert!(
            xml.contains(r#"<testsuite name="foundation" tests="2""#),
            "{xml}"
        );
        assert!(xml.contains(r#"failures="1""#), "{xml}");
        assert!(xml.contains("exit 1: boom"), "{xml}");
        assert!(xml.contains(r#"name="gate/foundation/nodes""#), "{xml}");
    }
}
