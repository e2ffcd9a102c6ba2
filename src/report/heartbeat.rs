//! The heartbeat for plain lines: a `still-running` event for each step that has run for another
//! interval, so a CI log never goes silent during a long wait (CI systems kill quiet jobs).
//!
//! Owns the timing only. The dispatcher feeds it every event and calls [`Heartbeat::due`] from a
//! timer; it emits what comes back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::Event;

pub struct Heartbeat {
    every: Duration,
    /// Running step → (started, last beat).
    running: BTreeMap<String, (Instant, Instant)>,
}

impl Heartbeat {
    /// A beat per step every `every` (5 minutes in the engine; `BOOTSTRAP_HEARTBEAT` in seconds).
    pub fn new(every: Duration) -> Heartbeat {
        Heartbeat {
            every,
            running: BTreeMap::new(),
        }
    }

    /// The interval from `BOOTSTRAP_HEARTBEAT` (seconds), else 5 minutes.
    pub fn from_env() -> Heartbeat {
        let secs = std::env::var("BOOTSTRAP_HEARTBEAT")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .unwrap_or(300);
        Heartbeat::new(Duration::from_secs(secs))
    }

    /// How often [`Heartbeat::due`] is worth calling.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Note a step starting or ending.
    pub fn observe(&mut self, e: &Event, now: Instant) {
        match e {
            Event::StepStarted { id, .. } => {
                self.running.entry(id.clone()).or_insert((now, now));
            }
            Event::StepFinished { id, .. } | Event::StepSkipped { id, .. } => {
                self.running.remove(id);
            }
            _ => {}
        }
    }

    /// The beats due at `now`: one `still-running` event per step quiet for `every`.
    pub fn due(&mut self, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        for (id, (started, last)) in self.running.iter_mut() {
            if now.duration_since(*last) >= self.every {
                *last = now;
                out.push(Event::StillRunning {
                    id: id.clone(),
                    elapsed_ms: now.duration_since(*started).as_millis() as u64,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_once_per_interval_per_running_step() {
        let t0 = Instant::now();
        let mut h = Heartbeat::new(Duration::from_secs(300));
        h.observe(
            &Event::StepStarted {
                id: "nodes-ready/infra".into(),
                phase: "p".into(),
                cluster: None,
                node: None,
                attempt: 1,
            },
            t0,
        );
        assert!(h.due(t0 + Duration::from_secs(299)).is_empty());
        let beats = h.due(t0 + Duration::from_secs(300));
        assert_eq!(
            beats,
            vec![Event::StillRunning {
                id: "nodes-ready/infra".into(),
                elapsed_ms: 300_000
            }]
        );
        assert!(h.due(t0 + Duration::from_secs(301)).is_empty());
        h.observe(
            &Event::StepSkipped {
                id: "nodes-ready/infra".into(),
                reason: String::new(),
            },
            t0,
        );
        assert!(h.due(t0 + Duration::from_secs(900)).is_empty());
    }
}
