//! The crash harness (issue 7): a signal at N instants spread over a whole lab run (every phase that
//! exists), then `resume`. After each: the state loads, resume converges to the end state of an
//! uninterrupted run, no step recorded done ran again, no irreversible action succeeded twice (the
//! lab's call log), and no process is left behind.
//!
//! `BOOTSTRAP_CRASH_N` sets N for each signal (default: 5 kills, 2 TERMs, 2 INTs); `scripts/crash-harness`
//! runs it at N = 100 and prints the figures.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

fn bootstrap(state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(common::bin());
    c.arg("--state-dir")
        .arg(state)
        .args(args)
        // BOOTSTRAP_TEST_ROOT: a copy of the tree to run from (a long harness run is not disturbed
        // by edits to phases/).
        .current_dir(
            std::env::var_os("BOOTSTRAP_TEST_ROOT")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .env("CI", "true")
        .env("NO_COLOR", "1")
        .env_remove("BOOTSTRAP_PLAN")
        .env_remove("BOOTSTRAP_STATE_DIR")
        .env_remove("BOOTSTRAP_LAB_FAULTS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Wait for a child with a deadline; a child still running then is killed and reported as hung.
fn wait(mut child: Child, limit: Duration) -> Result<(Option<i32>, String), String> {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Ok((st.code(), err));
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("hung for {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every stored object of every lab cluster, as (cluster, resource, key), read the way the lab
/// reads it (snapshot plus write-ahead log).
fn objects(state: &Path) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for cluster in ["infra", "apps"] {
        let path = state
            .join("lab/clusters")
            .join(cluster)
            .join("objects.json");
        let store = bootstrap_lab::apiserver::Store::new(Some(path));
        let inner = store.inner.lock().unwrap();
        for (res, m) in &inner.objects {
            if res == "/events" {
                continue;
            }
            for k in m.keys() {
                // A Helm release is one object whatever its revision count: an idempotent
                // `helm upgrade --install` repeated after a crash adds a revision, not a release.
                let k = match k.rsplit_once(".v") {
                    Some((release, rev))
                        if k.contains("sh.helm.release.v1.") && rev.parse::<u32>().is_ok() =>
                    {
                        release.to_string()
                    }
                    _ => k.clone(),
                };
                out.insert((cluster.to_string(), res.clone(), k));
            }
        }
    }
    out
}

fn journal(state: &Path) -> Vec<Value> {
    std::fs::read_to_string(state.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Successful irreversible actions in the lab's call log, by what they act on.
fn irreversible(state: &Path) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    let text = std::fs::read_to_string(state.join("lab/calls.jsonl")).unwrap_or_default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["exit"] != 0 {
            continue;
        }
        let args: Vec<&str> = v["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let after = |flag: &str| {
            args.iter()
                .position(|a| *a == flag)
                .and_then(|i| args.get(i + 1))
                .copied()
                .unwrap_or("")
        };
        let key = match (v["tool"].as_str(), args.as_slice()) {
            (Some("talosctl"), a) if a.contains(&"bootstrap") => {
                format!("talosctl bootstrap {}", after("-n"))
            }
            (Some("talosctl"), ["gen", "secrets", ..]) => {
                format!("talosctl gen secrets {}", after("-o"))
            }
            (Some("talosctl"), a) if a.contains(&"apply-config") && a.contains(&"--insecure") => {
                format!("talosctl apply-config --insecure {}", after("-n"))
            }
            (Some("op"), ["item", "create", ..]) => {
                format!("op item create {}", after("--title"))
            }
            _ => continue,
        };
        *n.entry(key).or_insert(0) += 1;
    }
    n
}

/// Processes left behind that belong to this state dir (stand-ins run from its lab/bin).
fn leftovers(state: &Path) -> Vec<String> {
    let needle = state.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&needle) && !cmd.contains("crash_harness") {
                out.push(format!("{pid}: {cmd}"));
            }
        }
    }
    out
}

struct Trial {
    signal: Signal,
    at: Duration,
}

fn one(t: &Trial, baseline: &BTreeSet<(String, String, String)>) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let child = bootstrap(&state, &["run", "--yes"]).spawn().unwrap();
    std::thread::sleep(t.at);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), t.signal);
    let (code, err) =
        wait(child, Duration::from_secs(60)).map_err(|e| format!("the signalled run {e}"))?;
    let expected = match t.signal {
        Signal::SIGKILL => None,
        Signal::SIGTERM => Some(143),
        _ => Some(130),
    };
    // A run that finished before the signal exits 0.
    if code != expected && code != Some(0) {
        return Err(format!(
            "the signalled run exited {code:?}, expected {expected:?}: {err}"
        ));
    }
    if t.signal != Signal::SIGKILL && state.join("lock.json").exists() {
        return Err("the lock was left behind".into());
    }
    let before = journal(&state);
    let runs_before: BTreeSet<String> = before
        .iter()
        .filter_map(|r| r["run_id"].as_str().map(String::from))
        .collect();
    let done_before: BTreeSet<String> = before
        .iter()
        .filter(|r| {
            r["record"] == "step-finished"
                && (r["outcome"] == "done" || r["outcome"] == "satisfied")
        })
        .filter_map(|r| r["id"].as_str().map(String::from))
        .collect();
    // Killed before it recorded its start (still loading the plan): there is no run to resume,
    // and `resume` says so (exit 2); the user runs again.
    let recorded = before.iter().any(|r| r["record"] == "run-started");
    let next: &[&str] = if recorded {
        &["resume", "--yes"]
    } else {
        &["run", "--yes"]
    };
    if !recorded {
        let (code, err) = wait(
            bootstrap(&state, &["resume", "--yes"]).spawn().unwrap(),
            Duration::from_secs(60),
        )
        .map_err(|e| format!("resume {e}"))?;
        if code != Some(2) || !err.contains("no run to resume") {
            return Err(format!(
                "resume with nothing recorded exited {code:?}: {err}"
            ));
        }
    }
    let resumed = bootstrap(&state, next).spawn().unwrap();
    let (code, err) = wait(resumed, Duration::from_secs(180)).map_err(|e| format!("resume {e}"))?;
    if code != Some(0) {
        return Err(format!("resume exited {code:?}: {err}"));
    }
    // No step recorded done ran again (gates are checks: they are evaluated on every run).
    for r in journal(&state) {
        let id = r["id"].as_str().unwrap_or("");
        if r["record"] == "step-started"
            && !runs_before.contains(r["run_id"].as_str().unwrap_or(""))
            && done_before.contains(id)
            && !id.starts_with("gate/")
        {
            return Err(format!("{id} was recorded done and ran again"));
        }
    }
    for (what, n) in irreversible(&state) {
        if n > 1 {
            return Err(format!(
                "an irreversible action succeeded {n} times: {what}"
            ));
        }
    }
    let end = objects(&state);
    if &end != baseline {
        let missing: Vec<_> = baseline.difference(&end).take(5).collect();
        let extra: Vec<_> = end.difference(baseline).take(5).collect();
        return Err(format!(
            "the end state differs: missing {missing:?}, extra {extra:?}"
        ));
    }
    let left = leftovers(&state);
    if !left.is_empty() {
        return Err(format!("processes left behind: {left:?}"));
    }
    Ok(())
}

#[test]
fn signals_at_any_instant_then_resume_converge() {
    // The uninterrupted run: its duration spreads the instants, its end state is the reference.
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let t = Instant::now();
    let (code, err) = wait(
        bootstrap(&state, &["run", "--yes"]).spawn().unwrap(),
        Duration::from_secs(180),
    )
    .unwrap();
    assert_eq!(code, Some(0), "the uninterrupted run failed: {err}");
    let span = t.elapsed();
    let baseline = objects(&state);
    assert!(!baseline.is_empty());

    let n_env = std::env::var("BOOTSTRAP_CRASH_N")
        .ok()
        .and_then(|n| n.parse::<u32>().ok());
    let mut trials = Vec::new();
    for (signal, default_n) in [
        (Signal::SIGKILL, 5),
        (Signal::SIGTERM, 2),
        (Signal::SIGINT, 2),
    ] {
        let n = n_env.unwrap_or(default_n);
        for i in 0..n {
            // Spread over the run, with a little jitter so repeated runs probe new instants.
            let frac = (i as f64 + 0.25 + fastrand::f64() * 0.5) / n as f64;
            trials.push(Trial {
                signal,
                at: span.mul_f64(frac),
            });
        }
    }
    let mut failures = Vec::new();
    let mut by_signal: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for t in &trials {
        let r = one(t, &baseline);
        let e = by_signal.entry(format!("{:?}", t.signal)).or_default();
        e.1 += 1;
        match r {
            Ok(()) => e.0 += 1,
            Err(why) => failures.push(format!("{:?} at {:?}: {why}", t.signal, t.at)),
        }
    }
    for (sig, (ok, all)) in &by_signal {
        println!("crash harness: {sig}: {ok}/{all} resumes converged");
    }
    assert!(
        failures.is_empty(),
        "{} of {} trials failed:\n{}",
        failures.len(),
        trials.len(),
        failures.join("\n")
    );
}
