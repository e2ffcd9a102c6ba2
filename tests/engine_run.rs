//! The engine through the real binary, with small test-only tools (shell steps) and `lab: false`
//! plans: parallel branches, checks that skip, retries, timeouts that kill whole process groups,
//! crash and resume, locking, changed definitions, saved plans, confirmation, secrets, JSON events.

mod common;

#[path = "common/ws.rs"]
mod ws;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::text;
use serde_json::Value;
use ws::{Ws, alive, all, step};

#[test]
fn independent_branches_run_in_parallel() {
    let ws = Ws::new(
        ws::TWO_CLUSTERS,
        r#"
id: p
title: P
steps:
  - id: branch
    for_each: cluster
    run: { shell: "date +%s%N > {W}/{{ cluster.name }}.start; sleep 1; date +%s%N > {W}/{{ cluster.name }}.end" }
"#,
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let n = |f: &str| ws.read(f).trim().parse::<u128>().unwrap();
    // Both started before either finished: they overlapped.
    assert!(
        n("infra.start") < n("apps.end") && n("apps.start") < n("infra.end"),
        "the two branches did not overlap"
    );
}

#[test]
fn a_step_whose_check_passes_is_skipped_and_its_action_never_runs() {
    let ws = Ws::new(
        ws::TWO_CLUSTERS,
        r#"
id: p
title: P
steps:
  - id: done-already
    check: { cmd: ["true"] }
    run: { shell: "touch {W}/ran" }
"#,
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(!ws.root.join("ran").exists(), "the action ran");
    assert_eq!(step(&ws.status(), "done-already")["status"], "satisfied");
}

#[test]
fn transient_failures_retry_and_deterministic_ones_fail_at_once() {
    let ws = Ws::new(
        ws::TWO_CLUSTERS,
        r#"
id: p
title: P
steps:
  - id: flaky
    run: { shell: "n=$(cat {W}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {W}/n; if [ $n -lt 3 ]; then echo 'rpc error: code = FailedPrecondition desc = bootstrap is not available yet' >&2; exit 1; fi" }
    retry: { attempts: 5, backoff: 10ms, transient: ["code = FailedPrecondition"] }
  - id: broken
    run: { shell: "echo 'rpc error: code = InvalidArgument desc = etcd is not configured' >&2; echo x >> {W}/broken; exit 1" }
    retry: { attempts: 5, backoff: 10ms, transient: ["code = FailedPrecondition"] }
"#,
    );
    let out = ws.run(&["run", "--keep-going"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let st = ws.status();
    assert_eq!(step(&st, "flaky")["status"], "done");
    assert_eq!(step(&st, "flaky")["attempts"], 3);
    assert_eq!(step(&st, "broken")["status"], "failed");
    assert_eq!(step(&st, "broken")["attempts"], 1);
    assert_eq!(
        ws.read("broken").lines().count(),
        1,
        "a deterministic error was retried"
    );
    let e = text(&out.stderr);
    assert!(
        e.contains("failed: broken") && e.contains("InvalidArgument"),
        "{e}"
    );
    assert!(
        e.contains("bootstrap resume"),
        "the summary says how to resume: {e}"
    );
}

#[test]
fn a_hung_step_is_killed_at_its_timeout_with_its_whole_process_group() {
    let ws = Ws::new(
        ws::TWO_CLUSTERS,
        r#"
id: p
title: P
steps:
  - id: hang
    run: { shell: "sleep 300 & echo $! > {W}/grandchild.pid; echo $$ > {W}/child.pid; sleep 300" }
    timeout: 1s
"#,
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(all(&out).contains("timed out"), "{}", all(&out));
    for f in ["child.pid", "grandchild.pid"] {
        let pid: i32 = ws.read(f).trim().parse().unwrap();
        let mut gone = false;
        for _ in 0..50 {
            if !alive(pid) {
                gone = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(gone, "{f} ({pid}) survived the timeout");
    }
}

#[test]
fn kill_9_mid_run_then_resume_completes_without_rerunning_done_steps() {
    let ws = Ws::new(
        ws::TWO_CLUSTERS,
        r#"
id: p
title: P
steps:
  - id: first
    run: { shell: "echo ran >> {W}/first.count" }
  - id: slow
    needs: [first]
    check: { cmd: [test, -f, "{W}/slow.done"] }
    run: { shell: "echo ran >> {W}/slow.count; sleep 2; touch {W}/slow.done" }
  - id: last
    needs: [slow]
    run: { shell: "echo ran >> {W}/last.count" }
"#,
    );
    let mut child = ws
        .cmd(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if ws.root.join("slow.count").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        ws.root.join("slow.count").exists(),
        "the slow step never started"
    );
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    // The state loads, and the killed step is recorded as interrupted.
    let st = ws.status();
    assert_eq!(step(&st, "first")["status"], "done");
    assert_eq!(step(&st, "slow")["status"], "interrupted");
    let out = ws.run(&["resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert_eq!(
        ws.read("first.count").lines().count(),
        1,
        "a recorded-done step ran again"
    );
    assert_eq!(ws.read("last.count").lines().count(), 1);
    // The interrupted step's check decided: it either completed before (satisfied) or ran again.
    let st = ws.status();
    let slow = step(&st, "slow")["status"].as_str().unwrap().to_string();
    assert!(slow == "satisfied" || slow == "done", "{slow}");
    assert!(ws.root.join("slow.done").exists());
}

#[test]
fn a_second_run_exits_3_naming_the_holder_and_a_stale_lock_is_taken_over() {
    let ws = Ws::new(
        ws::TWO_CLUSTERS,
        r#"
id: p
title: P
steps:
  - id: wait
    run: { shell: "touch {W}/started; sleep 3" }
"#,
    );
    let mut first = ws
        .cmd(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if ws.root.join("started").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(3), "{}", all(&out));
    let e = text(&out.stderr);
    assert!(
        e.contains(&format!("pid {}", first.id())),
        "names the holder: {e}"
    );
    first.kill().unwrap();
    let _ = first.wait();
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(
        text(&out.stderr).contains("took over a stale lock"),
        "{}",
        all(&out)
    );
}

#[test]
fn a_changed_step_reruns_with_its_dependents_only() {
    let phase = r#"
id: p
title: P
steps:
  - id: a
    run: { shell: "echo MSG >> {W}/a.count" }
  - id: b
    needs: [a]
    run: { shell: "echo ran >> {W}/b.count" }
  - id: c
    run: { shell: "echo ran >> {W}/c.count" }
"#;
    let ws = Ws::new(ws::TWO_CLUSTERS, &phase.replace("MSG", "one"));
    assert_eq!(ws.run(&["run"]).status.code(), Some(0));
    ws.phase(&phase.replace("MSG", "two"));
    let plan = ws.run(&["plan", "--format", "json"]);
    let v: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "a")
            .unwrap()["status"],
        "changed"
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert_eq!(ws.read("a.count"), "one\ntwo\n");
    assert_eq!(
        ws.read("b.count").lines().count(),
        2,
        "the dependent re-ran"
    );
    assert_eq!(
        ws.read("c.count").lines().count(),
        1,
        "an unrelated step re-ran"
    );
}

#[test]
fn a_stale_saved_plan_is_refused_and_a_fresh_one_runs() {
    let ws = Ws::new(
        ws::TWO_CLUSTERS,
        r#"
id: p
title: P
steps:
  - id: a
    run: { shell: "echo ran >> {W}/a.count" }
"#,
    );
    let saved = ws.root.join("plan.json");
    assert_eq!(
        ws.run(&["plan", "--format", "json", "--out", saved.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    // Someone edits the phases after review.
    let phase = ws
        .read("phases/01-test.yaml")
        .replace("echo ran", "echo edited");
    std::fs::write(ws.root.join("phases/01-test.yaml"), phase).unwrap();
    let out = ws.run(&["run", "--from-plan", saved.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert!(
        text(&out.stderr).contains("the saved plan is stale: the phase files changed"),
        "{}",
        all(&out)
    );
    assert!(!ws.root.join("a.count").exists());
    assert_eq!(
        ws.run(&["plan", "--format", "json", "--out", saved.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let out = ws.run(&["run", "--from-plan", saved.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    // Running changed the state: the same saved plan is now stale.
    let out = ws.run(&["run", "--from-plan", saved.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("the recorded state changed"));
}

#[test]
fn a_confirm_step_without_yes_stops_cleanly_when_not_on_a_terminal() {
    let ws = Ws::new(
        ws::TWO_CLUSTERS,
        r#"
id: p
title: P
steps:
  - id: wipe
    description: Wipe the disk
    confirm: true
    run: { shell: "touch {W}/wiped" }
"#,
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(!ws.root.join("wiped").exists());
    assert!(text(&out.stderr).contains("--yes"), "{}", all(&out));
    let out = ws.run(&["run", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(ws.root.join("wiped").exists());
}

#[test]
fn a_secret_value_never_reaches_logs_state_plan_or_report() {
    let ws = Ws::new(
        ws::TWO_CLUSTERS,
        r#"
id: p
title: P
steps:
  - id: use-token
    env: { TOKEN: "{{ secrets.token }}" }
    run: { shell: "echo the token is $TOKEN; echo $TOKEN >&2; test -n \"$TOKEN\"" }
"#,
    );
    let secret = "s3cr3t-Value-4711";
    let op = ws.root.join("bin/op");
    std::fs::write(&op, format!("#!/bin/sh\n[ \"$1\" = read ] && [ \"$2\" = op://vault/item/field ] && echo {secret} && exit 0\nexit 1\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&op, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = ws.run(&["run", "-v"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(!all(&out).contains(secret));
    let plan = ws.run(&["plan", "--format", "json"]);
    assert!(!all(&plan).contains(secret) && text(&plan.stdout).contains("op://vault/item/field"));
    let mut seen_redacted = false;
    for entry in walk(&ws.root.join("state")) {
        let body = std::fs::read_to_string(&entry).unwrap_or_default();
        assert!(
            !body.contains(secret),
            "the secret is in {}",
            entry.display()
        );
        seen_redacted |= body.contains("the token is ***");
    }
    assert!(seen_redacted, "the log shows the redacted line");
    let mode = std::fs::metadata(ws.root.join("state"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p))
            } else {
                out.push(p)
            }
        }
    }
    out
}

#[test]
fn json_events_follow_the_documented_shape() {
    let ws = Ws::new(
        ws::TWO_CLUSTERS,
        r#"
id: p
title: P
steps:
  - id: a
    for_each: cluster
    run: { cmd: [echo, "hello {{ cluster.name }}"] }
  - id: skipped
    check: { cmd: ["true"] }
    run: { cmd: ["false"] }
gate:
  - id: ok
    text: Always fine
    check: { cmd: ["true"] }
"#,
    );
    let out = ws.run(&["run", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let required: &[(&str, &[&str])] = &[
        (
            "run-started",
            &["run_id", "plan", "lab", "steps", "concurrency", "resumed"],
        ),
        ("phase-started", &["phase"]),
        (
            "step-started",
            &["id", "phase", "cluster", "node", "attempt", "log"],
        ),
        ("step-skipped", &["id", "reason"]),
        ("output", &["id", "line"]),
        (
            "attempt-failed",
            &["id", "attempt", "transient", "detail", "retry_in_ms"],
        ),
        (
            "step-finished",
            &[
                "id",
                "outcome",
                "attempts",
                "duration_ms",
                "exit_code",
                "log",
                "detail",
            ],
        ),
        ("step-spawned", &["id", "pgid"]),
        ("confirmation-required", &["id", "description"]),
        ("gate-item", &["phase", "item", "text", "passed", "detail"]),
        ("gate-finished", &["phase", "passed"]),
        (
            "run-finished",
            &["run_id", "outcome", "duration_ms", "failed", "report"],
        ),
    ];
    let mut kinds = std::collections::HashSet::new();
    for line in text(&out.stdout).lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        assert_eq!(v["schema"], 1, "{line}");
        assert!(v["ts"].is_string(), "{line}");
        let kind = v["event"]
            .as_str()
            .unwrap_or_else(|| panic!("no event: {line}"));
        let fields = required
            .iter()
            .find(|(k, _)| *k == kind)
            .unwrap_or_else(|| panic!("undocumented event {kind}"))
            .1;
        for f in fields {
            assert!(v.get(*f).is_some(), "{kind} lacks {f}: {line}");
        }
        kinds.insert(kind.to_string());
    }
    for k in [
        "run-started",
        "step-started",
        "step-finished",
        "step-skipped",
        "output",
        "gate-item",
        "gate-finished",
        "run-finished",
    ] {
        assert!(kinds.contains(k), "no {k} event");
    }
}
