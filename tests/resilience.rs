//! Issue 7, "Trustworthy runs": each defect found by crashing and signalling real runs has a test
//! here that failed before its fix.

mod common;
#[path = "common/lab.rs"]
mod lab;
#[path = "common/ws.rs"]
mod ws;

use std::time::{Duration, Instant};

use serde_json::json;

use bootstrap_lab::apiserver::Store;
use lab::{TestLab, err, out};

/// Defect 1: the lab's API server persisted every 300 ms, so a kill lost writes it had
/// acknowledged. Every change is now logged before it is acknowledged.
#[test]
fn lab_api_server_never_loses_an_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("objects.json");
    let s = Store::new(Some(path.clone()));
    let cm = s.find_kind("v1", "ConfigMap").unwrap();
    let ns = s.find_kind("v1", "Namespace").unwrap();
    let obj = |name: &str, v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": v}});
    s.create(&cm, Some("default"), obj("snapshotted", "1"), false)
        .unwrap();
    s.flush();
    // Acknowledged after the last snapshot; the process then dies without flushing.
    s.create(&cm, Some("default"), obj("late", "1"), false)
        .unwrap();
    let cur = s.get(&cm, Some("default"), "snapshotted").unwrap();
    let mut changed = cur.clone();
    changed["data"]["v"] = json!("2");
    s.update(&cm, Some("default"), "snapshotted", changed, false, false)
        .unwrap();
    s.create(
        &ns,
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gone"}}),
        false,
    )
    .unwrap();
    s.create(&cm, Some("gone"), obj("inside", "1"), false)
        .unwrap();
    s.delete(&ns, None, "gone", false).unwrap();
    let rv = s.current_rv();
    drop(s);

    let again = Store::new(Some(path));
    assert_eq!(again.current_rv(), rv, "resourceVersion continues");
    assert_eq!(
        again.get(&cm, Some("default"), "late").unwrap()["data"]["v"],
        "1"
    );
    assert_eq!(
        again.get(&cm, Some("default"), "snapshotted").unwrap()["data"]["v"],
        "2"
    );
    assert!(again.get(&ns, None, "gone").is_err());
    assert!(again.get(&cm, Some("gone"), "inside").is_err());
}

/// Defect 1: a bootstrapped cluster's configured nodes register again when their Node objects are
/// missing (a kill between `talosctl bootstrap` and the registration, or a lost write), as real
/// kubelets keep retrying registration.
#[test]
fn lab_kubelets_register_missing_nodes_of_a_bootstrapped_cluster() {
    let lab = TestLab::start(None);
    lab.talos_up("infra");
    let kc = lab.kubeconfig().display().to_string();
    let get = || {
        lab.tool(
            "kubectl",
            &[
                "--kubeconfig",
                &kc,
                "--context",
                "admin@infra",
                "get",
                "node",
                "infra-02",
                "-o",
                "name",
            ],
        )
    };
    assert!(get().status.success(), "{}", err(&get()));
    let del = lab.tool(
        "kubectl",
        &[
            "--kubeconfig",
            &kc,
            "--context",
            "admin@infra",
            "delete",
            "node",
            "infra-02",
        ],
    );
    assert!(del.status.success(), "{}", err(&del));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = get();
        if o.status.success() {
            assert_eq!(out(&o).trim(), "node/infra-02");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "infra-02 was never registered again: {}",
            err(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

use std::process::Stdio;
use ws::{Ws, all, step};

fn count(ws: &Ws, f: &str) -> usize {
    ws.read(f).lines().count()
}

/// Defect 2: the check is evaluated again before every retry attempt: an attempt that did the work
/// but reported failure is not repeated.
#[test]
fn the_check_runs_before_every_retry_attempt() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: install
    check: { cmd: [test, -f, "{W}/marks/installed"] }
    run: { shell: "echo ran >> {W}/install.count; touch {W}/marks/installed; exit 1" }
    retry: { attempts: 3, backoff: 50ms }
"#,
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert_eq!(
        count(&ws, "install.count"),
        1,
        "the action ran again although its check passed"
    );
    assert_eq!(step(&ws.status(), "install")["status"], "done");
}

/// Defect 2: an interrupted step's check gets retries on transient errors (a node still
/// installing refuses connections) before the engine decides that the work was not done.
#[test]
fn an_interrupted_steps_check_is_retried_on_transient_errors_before_the_action_runs_again() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: install
    # Refuses connections for its first two answers after the interruption, then answers.
    check: { shell: "n=$(cat {W}/marks/n 2>/dev/null || echo 0); echo $((n+1)) > {W}/marks/n; if [ -f {W}/marks/installed ] && [ $n -lt 3 ]; then echo 'dial tcp 10.0.0.1:50000: connect: connection refused' >&2; exit 1; fi; test -f {W}/marks/installed" }
    run: { shell: "echo ran >> {W}/install.count; touch {W}/marks/installed; sleep 30" }
    retry: { attempts: 4, backoff: 50ms }
"#,
    );
    let mut child = ws
        .cmd(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ws.wait_for("marks/installed");
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(step(&ws.status(), "install")["status"], "interrupted");
    let out = ws.run(&["resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert_eq!(
        count(&ws, "install.count"),
        1,
        "the interrupted action ran again: {}",
        all(&out)
    );
    assert_eq!(step(&ws.status(), "install")["status"], "satisfied");
}

/// Defect 3: the step-started record is durable before the command starts (write-ahead). Many
/// steps start at once, so a command spawned before its record would find it missing.
#[test]
fn step_started_is_recorded_before_the_command_starts() {
    let mut phase = String::from("id: p\ntitle: P\nsteps:\n");
    for i in 0..24 {
        phase.push_str(&format!(
            "  - id: s{i}\n    run: {{ cmd: [grep, -q, '\"record\":\"step-started\".*\"id\":\"s{i}\"', \"{{W}}/state/journal.jsonl\"] }}\n"
        ));
    }
    let ws = Ws::new(ws::ONE_CLUSTER, &phase);
    let out = ws.run(&["run", "--concurrency", "24"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
}

/// Defect 4: SIGTERM and SIGHUP are handled like Ctrl-C: the process groups are stopped, the steps
/// recorded interrupted, the lock released, exit 143 / 129, and `resume` continues.
#[test]
fn sigterm_and_sighup_interrupt_cleanly_and_resume_continues() {
    for (sig, code) in [
        (nix::sys::signal::Signal::SIGTERM, 143),
        (nix::sys::signal::Signal::SIGHUP, 129),
    ] {
        let ws = Ws::new(
            ws::ONE_CLUSTER,
            r#"
id: p
title: P
steps:
  - id: slow
    check: { cmd: [test, -f, "{W}/marks/slow.done"] }
    run: { shell: "echo $$ > {W}/marks/slow.pid; sleep 30 & wait; touch {W}/marks/slow.done" }
  - id: after
    needs: [slow]
    run: { cmd: [touch, "{W}/marks/after"] }
"#,
        );
        let child = ws
            .cmd(&["run"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        ws.wait_for("marks/slow.pid");
        std::thread::sleep(Duration::from_millis(200));
        let pid: i32 = ws.read("marks/slow.pid").trim().parse().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{sig}: {}", all(&out));
        assert!(!ws::alive(pid), "{sig}: the step's process survived");
        assert!(
            !ws.root.join("state/lock.json").exists(),
            "{sig}: the lock was left"
        );
        assert_eq!(step(&ws.status(), "slow")["status"], "interrupted");
        // The step's process is gone; the resume finishes the work.
        std::fs::write(ws.root.join("marks/slow.done"), "").unwrap();
        let out = ws.run(&["resume"]);
        assert_eq!(out.status.code(), Some(0), "{sig}: {}", all(&out));
        assert!(ws.root.join("marks/after").exists());
    }
}

/// Defect 5: the state directory's spelling does not change fingerprints.
#[test]
fn the_state_dirs_spelling_does_not_mark_steps_changed() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: a
    run: { cmd: [touch, "{{ state_dir }}/a"] }
"#,
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let plan = |dir: &str| {
        let mut c = std::process::Command::new(common::bin());
        c.args([
            "--plan",
            "plan.yaml",
            "--phases",
            "phases",
            "--state-dir",
            dir,
            "plan",
            "--format",
            "json",
        ])
        .current_dir(&ws.root)
        .env_remove("BOOTSTRAP_STATE_DIR")
        .env_remove("BOOTSTRAP_PLAN");
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", all(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    for spelling in [
        "./state",
        "state",
        "marks/../state",
        &ws.root.join("state").display().to_string(),
    ] {
        let v = plan(spelling);
        assert_eq!(v["summary"]["changed"], 0, "{spelling}: {}", v["summary"]);
        assert_eq!(v["summary"]["to_run"], 0, "{spelling}: {}", v["summary"]);
    }
}

/// Defect 6: what a change means, per step: `check` (default) lets the check decide, `run` runs
/// the action again, `stop` stops the run and names the step and what `reset` would do.
#[test]
fn on_change_check_run_and_stop() {
    let phase = |v: &str| {
        format!(
            r#"
id: p
title: P
steps:
  - id: by-check
    check: {{ cmd: [test, -f, "{{W}}/marks/by-check"] }}
    run: {{ shell: "echo {v} >> {{W}}/by-check.count; touch {{W}}/marks/by-check" }}
  - id: by-run
    on_change: run
    check: {{ cmd: [test, -f, "{{W}}/marks/by-run"] }}
    run: {{ shell: "echo {v} >> {{W}}/by-run.count; touch {{W}}/marks/by-run" }}
  - id: irreversible
    needs: [by-check, by-run]
    on_change: stop
    check: {{ cmd: [test, -f, "{{W}}/marks/irreversible"] }}
    run: {{ shell: "echo {v} >> {{W}}/irreversible.count; touch {{W}}/marks/irreversible" }}
"#
        )
    };
    let ws = Ws::new(ws::ONE_CLUSTER, &phase("1"));
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    ws.phase(&phase("2"));
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert_eq!(
        count(&ws, "by-check.count"),
        1,
        "on_change: check ran the action although its check passed"
    );
    assert_eq!(
        count(&ws, "by-run.count"),
        2,
        "on_change: run did not run again"
    );
    assert_eq!(
        count(&ws, "irreversible.count"),
        1,
        "an irreversible step ran again"
    );
    let text = all(&out);
    assert!(
        text.contains("irreversible changed since it ran")
            && text.contains("bootstrap reset irreversible"),
        "{text}"
    );
    // After `reset`, its check decides (the work exists): satisfied, still not run again.
    let out = ws.run(&["reset", "irreversible"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert_eq!(count(&ws, "irreversible.count"), 1);
}

/// Defect 8 and 12: once a step fails (without --keep-going) read-only waits stop at once, and no
/// action starts, not even one whose check was in flight when the failure came.
#[test]
fn after_a_failure_waits_are_cancelled_and_no_action_starts() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: fails
    run: { shell: "sleep 0.5; exit 1" }
  - id: waits
    run: { cmd: ["true"] }
    verify: { cmd: ["false"] }
    timeout: 2m
  - id: checking
    check: { shell: "sleep 1.5; exit 1" }
    run: { cmd: [touch, "{W}/marks/checking-ran"] }
"#,
    );
    let t = Instant::now();
    let out = ws.run(&["run", "--concurrency", "4"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "the wait went on after the failure: {:?}",
        t.elapsed()
    );
    assert!(
        !ws.root.join("marks/checking-ran").exists(),
        "an action started after the run failed"
    );
    let st = ws.status();
    assert_eq!(step(&st, "fails")["status"], "failed");
    assert_eq!(step(&st, "waits")["status"], "interrupted");
    assert!(
        step(&st, "waits")["detail"]
            .as_str()
            .unwrap()
            .contains("a step failed"),
        "{st}"
    );
}

/// Defect 10: a check's own `timeout:` is validated.
#[test]
fn a_checks_timeout_must_be_a_duration() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: a
    run: { cmd: ["true"] }
    verify: { nodes: { ready: true, timeout: banana } }
"#,
    );
    for cmd in [&["lint"][..], &["plan"], &["run"]] {
        let out = ws.run(cmd);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {}", all(&out));
        assert!(
            all(&out).contains("verify.timeout") && all(&out).contains("banana"),
            "{}",
            all(&out)
        );
    }
}

/// Defect 15: the step's timeout bounds the whole step (run and verify together).
#[test]
fn the_step_timeout_bounds_run_and_verify_together() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: a
    run: { shell: "sleep 3" }
    verify: { cmd: ["false"] }
    timeout: 4s
"#,
    );
    let t = Instant::now();
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "the step lasted {:?} with a 4s timeout",
        t.elapsed()
    );
}

/// Defect 16: `unlock --force` does not break a lock whose holder is alive on this host, unless
/// its pid is given, and then the holder is stopped first (never two writers).
#[test]
fn unlock_force_refuses_a_live_holder_unless_its_pid_is_given() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: slow
    check: { cmd: [test, -f, "{W}/marks/slow.done"] }
    run: { shell: "touch {W}/marks/started; sleep 30; touch {W}/marks/slow.done" }
"#,
    );
    let child = ws
        .cmd(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ws.wait_for("marks/started");
    let pid = child.id();
    let out = ws.run(&["unlock", "--force"]);
    assert_eq!(out.status.code(), Some(3), "{}", all(&out));
    assert!(
        all(&out).contains(&format!("pid {pid}")) && all(&out).contains("--pid"),
        "{}",
        all(&out)
    );
    // A second run still cannot start.
    let second = ws.run(&["run"]);
    assert_eq!(second.status.code(), Some(3), "{}", all(&second));
    let out = ws.run(&["unlock", "--force", "--pid", &pid.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(143),
        "the holder was not stopped by SIGTERM"
    );
    assert_eq!(step(&ws.status(), "slow")["status"], "interrupted");
}

/// Defect 17: garbage in the middle of the journal is reported with its line number; a torn last
/// line after a kill is cut off silently.
#[test]
fn garbage_in_the_middle_of_the_journal_is_reported_with_its_line() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: a
    run: { cmd: ["true"] }
"#,
    );
    assert_eq!(ws.run(&["run"]).status.code(), Some(0));
    let path = ws.root.join("state/journal.jsonl");
    let mut lines: Vec<String> = ws
        .read("state/journal.jsonl")
        .lines()
        .map(String::from)
        .collect();
    lines.insert(1, "this is not json".into());
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let out = ws.run(&["status"]);
    assert!(
        all(&out).contains("journal.jsonl:2: not a journal record"),
        "{}",
        all(&out)
    );
    assert_eq!(
        step(&ws.status(), "a")["status"],
        "done",
        "the records around the garbage were lost"
    );
}

/// Defect 18: an unwritable state directory is named in the error.
#[test]
fn an_unusable_state_dir_is_named() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: a
    run: { cmd: ["true"] }
"#,
    );
    // The state dir is a file: "is not a directory" / "file exists", with the path.
    std::fs::write(ws.root.join("state"), "").unwrap();
    let out = ws.run(&["run"]);
    assert_ne!(out.status.code(), Some(0));
    let text = all(&out);
    assert!(
        text.contains(&ws.root.join("state").display().to_string()),
        "{text}"
    );
}

/// Defect 20: a reader that closes the pipe early does not make `status` panic.
#[test]
fn status_json_into_a_closed_pipe_does_not_panic() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: a
    run: { cmd: ["true"] }
"#,
    );
    assert_eq!(ws.run(&["run"]).status.code(), Some(0));
    let mut child = ws
        .cmd(&["status", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the first byte
    let out = child.wait_with_output().unwrap();
    assert!(
        !common::text(&out.stderr).contains("panicked"),
        "{}",
        common::text(&out.stderr)
    );
}

/// Defect 21: the lab's `op` stand-in honours injected faults.
#[test]
fn the_op_stand_in_honours_faults() {
    let lab = TestLab::start(Some(
        r#"[{"id": "signed-out", "kind": "fail", "matches": "op item get", "stderr": "[ERROR] 2026/11/30 10:00:00 You are not currently signed in. Please run `op signin --help` for instructions", "times": 1}]"#,
    ));
    let o = lab.tool("op", &["item", "get", "x", "--vault", "homelab"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("not currently signed in"), "{}", err(&o));
}

/// Defect 9: a long step says what it is waiting for, in plain lines, while it waits.
#[test]
fn a_long_step_reports_a_heartbeat_with_what_it_waits_for() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: slow
    run: { cmd: [sleep, "2"] }
"#,
    );
    let out = ws
        .cmd(&["run"])
        .env("BOOTSTRAP_HEARTBEAT_SECS", "0.5")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let text = all(&out);
    assert!(
        text.lines()
            .any(|l| l.contains("still  slow (") && l.contains("run: sleep 2")),
        "{text}"
    );
}

/// Defect 19: a timeout says what ran and that it printed nothing; a failure summary has no
/// terminal escape codes.
#[test]
fn failure_details_say_what_ran_and_carry_no_escape_codes() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: hangs
    run: { cmd: [sleep, "5"] }
    timeout: 1s
  - id: colours
    run: { shell: "printf '\\033[31mboom\\033[0m\\n'; exit 1" }
"#,
    );
    let out = ws.run(&["run", "--keep-going"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let st = ws.status();
    let d = step(&st, "hangs")["detail"].as_str().unwrap().to_string();
    assert!(
        d.contains("timed out after 1s running `sleep 5`; it printed nothing"),
        "{d}"
    );
    let text = all(&out);
    assert!(text.contains("boom"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in the summary: {text:?}"
    );
}

/// Defect 11: gates are evaluated on every run; `plan --probe` counts drift (and
/// `--detailed-exitcode` says there is work); `run --refresh` asks done steps' checks again.
#[test]
fn drift_is_found_by_gates_probe_and_refresh() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: a
    check: { cmd: [test, -f, "{W}/marks/a"] }
    run: { shell: "echo ran >> {W}/a.count; touch {W}/marks/a" }
gate:
  - id: a-exists
    text: The work of a exists
    check: { cmd: [test, -f, "{W}/marks/a"] }
    timeout: 2s
"#,
    );
    assert_eq!(ws.run(&["run"]).status.code(), Some(0));
    let out = ws.run(&["plan", "--probe", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "no drift yet: {}", all(&out));
    // The world drifts (a lab reset, a manual change).
    std::fs::remove_file(ws.root.join("marks/a")).unwrap();
    let out = ws.run(&["plan", "--probe", "--detailed-exitcode", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["drift"], 1, "{}", v["summary"]);
    // A plain run skips the done step, but the gate is evaluated again and fails, by name.
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(all(&out).contains("a-exists"), "{}", all(&out));
    assert_eq!(count(&ws, "a.count"), 1);
    // --refresh asks the check again and runs what no longer holds.
    let out = ws.run(&["run", "--refresh"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert_eq!(count(&ws, "a.count"), 2);
}

/// Defect 14: once the Talos secrets are stored in 1Password they are the source of truth: a lost
/// local copy is restored, never generated anew. And (defect 12) no node is installed before its
/// cluster's secrets are stored.
#[test]
fn lost_talos_secrets_are_restored_from_1password_not_generated() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let run = |args: &[&str]| {
        std::process::Command::new(common::bin())
            .arg("--state-dir")
            .arg(&state)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CI", "true")
            .env_remove("BOOTSTRAP_PLAN")
            .env_remove("BOOTSTRAP_STATE_DIR")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&["run", "--step", "talos-secrets-store/*", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let secrets = state.join("talos/infra/secrets.yaml");
    let original = std::fs::read_to_string(&secrets).unwrap();
    // The local copy and the record of it are lost; 1Password (the lab vault) still holds it.
    std::fs::remove_dir_all(state.join("talos")).unwrap();
    assert_eq!(run(&["reset", "--all"]).status.code(), Some(0));
    let out = run(&["run", "--step", "talos-gen-secrets/*", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert_eq!(
        std::fs::read_to_string(&secrets).unwrap(),
        original,
        "new secrets were minted"
    );
    let generated = std::fs::read_to_string(state.join("lab/calls.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| {
            l.contains(r#""gen","secrets""#) && l.contains(r#""exit":0"#) && l.contains("/infra/")
        })
        .count();
    assert_eq!(generated, 1, "talosctl gen secrets ran again for infra");
    // talos-apply needs its cluster's talos-secrets-store.
    let plan = run(&[
        "plan",
        "--step",
        "talos-apply/infra/infra-01",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let apply = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "talos-apply/infra/infra-01")
        .unwrap();
    assert!(
        apply["needs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "talos-secrets-store/infra"),
        "{apply}"
    );
}

/// A run killed with kill -9 cannot stop its children: the next run stops the process groups its
/// interrupted steps left running before it decides anything (they would race it otherwise).
#[test]
fn a_resumed_run_stops_what_the_killed_run_left_running() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: slow
    check: { cmd: [test, -f, "{W}/marks/slow.done"] }
    run: { shell: "echo $$ > {W}/marks/slow.pid; sleep 30; touch {W}/marks/slow.done" }
"#,
    );
    let mut child = ws
        .cmd(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ws.wait_for("marks/slow.pid");
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL: the step's process group lives on
    let _ = child.wait();
    let pid: i32 = ws.read("marks/slow.pid").trim().parse().unwrap();
    assert!(ws::alive(pid), "the orphan should outlive kill -9");
    // Keep the resume short: the work is declared done by the time it checks.
    std::fs::write(ws.root.join("marks/slow.done"), "").unwrap();
    let out = ws.run(&["resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(
        all(&out).contains("was still running from run"),
        "{}",
        all(&out)
    );
    assert!(!ws::alive(pid), "the killed run's step is still running");
}
