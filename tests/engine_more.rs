//! More of the engine through the real binary: gate failures that name each failing item and why,
//! Ctrl-C (exit 130, steps recorded interrupted, no process left), --keep-going versus stopping,
//! `json` actions, reset and unlock, resume's recorded selection, the step environment (KUBECONFIG,
//! stdin closed), timestamped logs and the markdown report.

mod common;

#[path = "common/ws.rs"]
mod ws;

use std::process::Stdio;
use std::time::Duration;

use common::text;
use ws::{Ws, alive, all, step};

#[test]
fn a_failed_gate_names_each_failing_item_and_its_last_output() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: a
    run: { cmd: ["true"] }
gate:
  - id: fine
    text: This one passes
    check: { cmd: ["true"] }
  - id: broken
    text: This one never passes
    timeout: 3s
    check: { shell: "echo 'replicas 1/3 ready, waiting on pod x'; exit 1" }
"#,
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let s = all(&out);
    assert!(s.contains("broken"), "the failing item is not named: {s}");
    assert!(
        s.contains("replicas 1/3 ready"),
        "the failing item's last output is not shown: {s}"
    );
    // The one-line summary of a failure is the reason, not a label whose text is elsewhere.
    assert!(
        !s.lines()
            .any(|l| l.trim_end().ends_with("last output:") && l.contains("broken")),
        "a failure line ends on a dangling 'last output:': {s}"
    );
    let report = ws.read("state/last-run.md");
    assert!(report.contains("broken"), "{report}");
    assert!(report.contains("replicas 1/3 ready"), "{report}");
    assert!(
        report.contains("fine"),
        "passing evidence missing: {report}"
    );
    assert_eq!(step(&ws.status(), "gate/p")["status"], "failed");
}

#[test]
fn without_keep_going_nothing_new_starts_and_with_it_independent_branches_finish() {
    let phase = r#"
id: p
title: P
steps:
  - id: bad
    run: { shell: "echo nope; exit 7" }
  - id: after-bad
    needs: [bad]
    run: { shell: "touch {W}/marks/after-bad" }
  - id: slow-other
    run: { shell: "sleep 1; touch {W}/marks/slow-other" }
  - id: after-other
    needs: [slow-other]
    run: { shell: "touch {W}/marks/after-other" }
"#;
    // Without --keep-going: running steps finish, nothing new starts.
    let ws = Ws::new(ws::ONE_CLUSTER, phase);
    let out = ws.run(&["run", "--concurrency", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(!ws.root.join("marks/after-bad").exists());
    assert!(
        ws.root.join("marks/slow-other").exists(),
        "a running step was not allowed to finish"
    );
    assert!(
        !ws.root.join("marks/after-other").exists(),
        "a new step started after a failure without --keep-going"
    );
    let s = all(&out);
    assert!(s.contains("bad"), "{s}");
    assert!(s.contains("bootstrap resume"), "no resume hint: {s}");

    // With --keep-going: every branch that does not depend on the failure runs.
    let ws = Ws::new(ws::ONE_CLUSTER, phase);
    let out = ws.run(&["run", "--concurrency", "2", "--keep-going"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(!ws.root.join("marks/after-bad").exists());
    assert!(ws.root.join("marks/after-other").exists(), "{}", all(&out));
}

#[test]
fn json_actions_read_a_field_from_the_first_document_and_say_what_they_saw() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: deployed
    check:
      json:
        cmd: [sh, -c, "echo '{\"info\":{\"status\":\"deployed\"}} {\"info\":{\"status\":\"x\"}}'"]
        field: info.status
        equals: deployed
    run: { shell: "touch {W}/marks/deployed-ran" }
  - id: count
    run:
      json:
        cmd: [sh, -c, "echo '{\"items\":[{\"n\":3}]}'"]
        field: items.0.n
        one_of: ["2", "3"]
  - id: pending
    run:
      json:
        cmd: [sh, -c, "echo '{\"info\":{\"status\":\"pending-upgrade\"}}'"]
        field: info.status
        equals: deployed
"#,
    );
    let out = ws.run(&["run", "--keep-going"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(
        !ws.root.join("marks/deployed-ran").exists(),
        "a json check that passed on the first document still ran the action"
    );
    let st = ws.status();
    assert_eq!(step(&st, "deployed")["status"], "satisfied", "{st}");
    assert_eq!(step(&st, "count")["status"], "done", "{st}");
    assert_eq!(step(&st, "pending")["status"], "failed", "{st}");
    let detail = step(&st, "pending")["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("pending-upgrade"), "detail: {detail}");
}

#[test]
fn steps_get_kubeconfig_closed_stdin_and_timestamped_logs() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: env
    run: { shell: "echo KUBECONFIG=$KUBECONFIG; if read line; then echo got-input; else echo stdin-closed; fi" }
  - id: own
    env: { KUBECONFIG: /elsewhere/kubeconfig }
    run: { shell: "echo KUBECONFIG=$KUBECONFIG" }
"#,
    );
    // Give the child something on stdin: a closed stdin must not pass it through.
    let mut c = ws.cmd(&["run"]);
    c.stdin(Stdio::piped());
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut si = child.stdin.take().unwrap();
        let _ = si.write_all(b"hello\n");
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let st = ws.status();
    let log = std::fs::read_to_string(step(&st, "env")["log"].as_str().unwrap()).unwrap();
    let want = format!("KUBECONFIG={}", ws.root.join("state/kubeconfig").display());
    assert!(log.contains(&want), "want {want} in log:\n{log}");
    assert!(log.contains("stdin-closed"), "stdin was not closed:\n{log}");
    // Every output line carries a timestamp (HH:MM:SS at least).
    let re = regex::Regex::new(r"\d\d:\d\d:\d\d").unwrap();
    for line in log.lines().filter(|l| l.contains("stdin-closed")) {
        assert!(re.is_match(line), "untimestamped log line: {line}");
    }
    let own = std::fs::read_to_string(step(&st, "own")["log"].as_str().unwrap()).unwrap();
    assert!(own.contains("KUBECONFIG=/elsewhere/kubeconfig"), "{own}");
}

#[test]
fn ctrl_c_stops_running_steps_records_them_interrupted_and_exits_130() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: long
    run: { shell: "sh -c 'echo $$ > {W}/marks/grandchild; trap \"\" TERM; sleep 300' & echo $$ > {W}/marks/child; wait" }
  - id: later
    needs: [long]
    run: { shell: "touch {W}/marks/later" }
"#,
    );
    let child = ws
        .cmd(&["run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ws.wait_for("marks/grandchild");
    ws.wait_for("marks/child");
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", all(&out));
    for f in ["marks/child", "marks/grandchild"] {
        let pid: i32 = ws.read(f).trim().parse().unwrap();
        // The grandchild ignores TERM, so it only dies by the KILL after the grace period, and
        // bootstrap waits for that before exiting.
        assert!(!alive(pid), "{f} pid {pid} survived Ctrl-C");
    }
    assert!(!ws.root.join("marks/later").exists());
    let st = ws.status();
    assert_eq!(step(&st, "long")["status"], "interrupted", "{st}");
    assert_eq!(st["last_run"]["outcome"], "interrupted", "{st}");
}

#[test]
fn resume_reruns_the_recorded_selection_and_reset_forgets() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: one
    run: { shell: "echo x >> {W}/marks/one" }
  - id: flaky
    needs: [one]
    run: { shell: "if [ -e {W}/marks/fixed ]; then echo ok; else echo boom; exit 1; fi" }
  - id: unselected
    run: { shell: "echo x >> {W}/marks/unselected" }
"#,
    );
    let out = ws.run(&["run", "--step", "flaky"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    std::fs::write(ws.root.join("marks/fixed"), "").unwrap();
    let out = ws.run(&["resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert_eq!(
        ws.read("marks/one").lines().count(),
        1,
        "a done step ran again"
    );
    assert!(
        !ws.root.join("marks/unselected").exists(),
        "resume widened the selection"
    );
    let st = ws.status();
    assert_eq!(step(&st, "flaky")["status"], "done");
    assert_eq!(step(&st, "unselected")["status"], "never-run");

    let out = ws.run(&["reset", "one"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let st = ws.status();
    assert_eq!(step(&st, "one")["status"], "never-run", "{st}");
    assert_eq!(step(&st, "flaky")["status"], "done", "{st}");
    let out = ws.run(&["reset", "--all"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert_eq!(step(&ws.status(), "flaky")["status"], "never-run");
    let out = ws.run(&["reset", "no-such-step"]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
}

#[test]
fn unlock_refuses_a_live_holder_unless_forced() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: wait
    run: { shell: "touch {W}/marks/started; sleep 30" }
"#,
    );
    let mut child = ws
        .cmd(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ws.wait_for("marks/started");
    let out = ws.run(&["unlock"]);
    assert_eq!(out.status.code(), Some(3), "{}", all(&out));
    assert!(
        all(&out).contains(&child.id().to_string()),
        "unlock does not name the holder: {}",
        all(&out)
    );
    // --force does not break a live holder's lock either (issue 7, defect 16): it names the pid
    // to take over from.
    let out = ws.run(&["unlock", "--force"]);
    assert_eq!(out.status.code(), Some(3), "{}", all(&out));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_torn_journal_line_loses_nothing_recorded_before_or_after_it() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: one
    run: { shell: "echo x >> {W}/marks/one" }
  - id: two
    run: { shell: "echo x >> {W}/marks/two" }
"#,
    );
    let out = ws.run(&["run", "--step", "one"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    // A kill -9 in the middle of a write leaves half a record with no newline.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(ws.root.join("state/journal.jsonl"))
            .unwrap();
        f.write_all(br#"{"record":"step-finished","run_id":"x","id":"tw"#)
            .unwrap();
    }
    let st = ws.status();
    assert_eq!(step(&st, "one")["status"], "done", "{st}");
    let out = ws.run(&["run", "--step", "two"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let st = ws.status();
    assert_eq!(step(&st, "one")["status"], "done", "{st}");
    assert_eq!(step(&st, "two")["status"], "done", "{st}");
    // The record written right after the torn line (this run's start) survived.
    assert_eq!(st["last_run"]["steps"], serde_json::json!(["two"]), "{st}");
    assert_eq!(st["last_run"]["outcome"], "succeeded", "{st}");
}

#[test]
fn the_summary_and_report_show_the_last_20_lines_the_log_and_why_steps_were_skipped() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: noisy
    run: { shell: "for i in $(seq 1 30); do echo L$i.; done; exit 4" }
  - id: after
    needs: [noisy]
    run: { cmd: ["true"] }
  - id: present
    check: { cmd: ["true"] }
    run: { cmd: ["false"] }
"#,
    );
    let out = ws.run(&["run", "--keep-going"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let e = text(&out.stderr);
    assert!(e.contains("noisy"), "{e}");
    assert!(
        e.contains("L30.") && e.contains("L11."),
        "tail missing: {e}"
    );
    assert!(!e.contains("L10."), "more than the last 20 lines: {e}");
    let log = step(&ws.status(), "noisy")["log"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.contains(&log), "the log path is not named: {e}");
    assert!(e.contains("bootstrap resume"), "{e}");
    let report = ws.read("state/last-run.md");
    assert!(report.contains("L30."), "{report}");
    assert!(
        report.contains("noisy") && report.contains("after"),
        "{report}"
    );
    assert!(report.contains("present"), "{report}");
    // The skipped steps say why.
    assert!(
        report.contains("check passed") || report.contains("satisfied"),
        "{report}"
    );
    assert!(report.contains("needs a step that failed"), "{report}");
}

#[test]
fn steps_of_one_serial_group_never_overlap_while_others_do() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: merge-a
    serial: shared-file
    run: { shell: "date +%s%N > {W}/marks/a.start; sleep 0.5; date +%s%N > {W}/marks/a.end" }
  - id: merge-b
    serial: shared-file
    run: { shell: "date +%s%N > {W}/marks/b.start; sleep 0.5; date +%s%N > {W}/marks/b.end" }
  - id: free
    run: { shell: "date +%s%N > {W}/marks/f.start; sleep 0.5; date +%s%N > {W}/marks/f.end" }
"#,
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let n = |f: &str| {
        ws.read(&format!("marks/{f}"))
            .trim()
            .parse::<u128>()
            .unwrap()
    };
    assert!(
        n("a.end") <= n("b.start") || n("b.end") <= n("a.start"),
        "the serial steps overlapped"
    );
    let (first_start, first_end) = if n("a.start") < n("b.start") {
        (n("a.start"), n("a.end"))
    } else {
        (n("b.start"), n("b.end"))
    };
    assert!(
        n("f.start") < first_end && first_start < n("f.end"),
        "an unrelated step was held back"
    );
}

/// A step that prints nothing and succeeds leaves no log file; one that prints, or fails, does.
/// `logs` says the quiet one printed nothing.
#[test]
fn log_files_are_created_only_for_output_or_failure() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: quiet
    run: { cmd: ["true"] }
  - id: talks
    run: { cmd: ["echo", "hello from talks"] }
  - id: fails
    needs: [quiet, talks]
    run: { cmd: ["false"] }
"#,
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let st = ws.status();
    let log_of = |id: &str| {
        let p = step(&st, id)["log"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let p = std::path::PathBuf::from(&p);
        if p.is_absolute() { p } else { ws.root.join(p) }
    };
    assert!(
        !log_of("quiet").exists(),
        "a quiet success left a log file: {}",
        log_of("quiet").display()
    );
    let talks = std::fs::read_to_string(log_of("talks")).expect("the talking step's log");
    assert!(talks.contains("out hello from talks"), "{talks}");
    let fails = std::fs::read_to_string(log_of("fails")).expect("the failed step's log");
    assert!(fails.contains("exit code 1"), "{fails}");
    let out = ws.run(&["logs", "quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(all(&out).contains("printed nothing"), "{}", all(&out));
}

/// A run starts by compacting the journal into one snapshot record: what earlier runs recorded
/// (status, attempts for `logs --attempt`) is kept, the file does not grow with every run, and the
/// new run's records follow the snapshot.
#[test]
fn the_journal_is_compacted_on_run_start_and_keeps_what_it_knew() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: flaky
    retry: { attempts: 3, backoff: 10ms, max_backoff: 20ms }
    run: { shell: "n=$(cat {W}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {W}/n; echo attempt-$n; [ $n -ge 2 ]" }
  - id: other
    run: { cmd: ["echo", "other"] }
"#,
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let before = ws.status();
    let journal = ws.root.join("state/journal.jsonl");
    let first_size = std::fs::metadata(&journal).unwrap().len();
    // A second run that does work (a step reset), then a third.
    for _ in 0..2 {
        let out = ws.run(&["reset", "other"]);
        assert_eq!(out.status.code(), Some(0), "{}", all(&out));
        let out = ws.run(&["run"]);
        assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    }
    let text_j = std::fs::read_to_string(&journal).unwrap();
    let first: serde_json::Value = serde_json::from_str(text_j.lines().next().unwrap()).unwrap();
    assert_eq!(first["record"], "snapshot", "{text_j}");
    assert_eq!(
        text_j.matches("\"record\":\"snapshot\"").count(),
        1,
        "one snapshot, then this run's records: {text_j}"
    );
    assert_eq!(
        text_j.matches("\"record\":\"run-started\"").count(),
        1,
        "earlier runs' records were not folded: {text_j}"
    );
    assert!(
        std::fs::metadata(&journal).unwrap().len() < first_size * 3,
        "the journal grows with every run"
    );
    // What the first run recorded about `flaky` is still known.
    let after = ws.status();
    assert_eq!(step(&after, "flaky"), step(&before, "flaky"));
    let out = ws.run(&["logs", "flaky", "--attempt", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(text(&out.stdout).contains("attempt-1"), "{}", all(&out));
    assert!(!text(&out.stdout).contains("attempt-2"), "{}", all(&out));
}

/// `status` answers from the unit index a run leaves in the state directory while the plan and
/// phase files are the ones it was made from: the same answer as loading the workspace, and a
/// changed phase file is seen at once (the index is keyed by the files' contents).
#[test]
fn status_from_the_index_matches_a_full_load_and_sees_a_changed_phase() {
    let phase = r#"
id: p
title: P
steps:
  - id: a
    run: { cmd: ["true"] }
  - id: b
    needs: [a]
    run: { cmd: ["echo", "one"] }
"#;
    let ws = Ws::new(ws::ONE_CLUSTER, phase);
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let index = ws.root.join("state/index.json");
    assert!(index.exists(), "the run left no unit index");
    let from_index = ws.status();
    let text_from_index = text(&ws.run(&["status"]).stdout);
    std::fs::remove_file(&index).unwrap();
    let full = ws.status();
    assert_eq!(from_index["steps"], full["steps"]);
    assert!(index.exists(), "a full status did not write the index back");
    assert_eq!(text(&ws.run(&["status"]).stdout), text_from_index);
    // A changed definition: the index no longer matches, and `b` shows as changed.
    let changed = phase.replace(r#"["echo", "one"]"#, r#"["echo", "two"]"#);
    std::fs::write(ws.root.join("phases/01-test.yaml"), changed).unwrap();
    assert_eq!(step(&ws.status(), "b")["status"], "changed");
    assert_eq!(step(&ws.status(), "a")["status"], "done");
}

/// A run ends by writing a snapshot of the journal; `status` folds only the records after it.
/// Records appended later (a reset) count, and a journal rewritten in place is read whole.
#[test]
fn status_reads_the_snapshot_and_the_records_after_it() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: a
    run: { cmd: ["true"] }
  - id: b
    run: { cmd: ["true"] }
"#,
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let snapshot = ws.root.join("state/snapshot.json");
    assert!(snapshot.exists(), "the run left no snapshot");
    let with = ws.status();
    std::fs::rename(&snapshot, ws.root.join("snapshot.bak")).unwrap();
    let without = ws.status();
    assert_eq!(with["steps"], without["steps"]);
    std::fs::rename(ws.root.join("snapshot.bak"), &snapshot).unwrap();
    // A record after the snapshot.
    let out = ws.run(&["reset", "a"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert_eq!(step(&ws.status(), "a")["status"], "never-run");
    assert_eq!(step(&ws.status(), "b")["status"], "done");
    // The journal rewritten in place (same file, other bytes, longer): the snapshot no longer
    // matches and is not used.
    let journal = ws.root.join("state/journal.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    let forgot_b = format!(
        "{text}{}\n",
        serde_json::json!({"record": "reset", "at": "2026-01-01T00:00:00Z", "ids": ["b"], "all": false})
    );
    let mut shuffled: Vec<&str> = forgot_b.lines().collect();
    shuffled.rotate_left(1);
    let rewritten = shuffled.join("\n") + "\n";
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .and_then(|mut f| std::io::Write::write_all(&mut f, rewritten.as_bytes()))
        .unwrap();
    assert_eq!(step(&ws.status(), "b")["status"], "never-run");
}

/// A large generated phase file is read: serde-saphyr's default budget (250,000 YAML nodes) is a
/// guard against YAML bombs, not a size for plans; bootstrap raises it and keeps the alias caps.
#[test]
fn a_phase_file_past_the_parsers_default_node_budget_is_read() {
    let mut phase = String::from(
        "id: p\ntitle: P\nsteps:\n  - id: big\n    run: { cmd: [\"true\"] }\n    env:\n",
    );
    for i in 0..130_000 {
        phase.push_str(&format!("      K{i}: v\n"));
    }
    let ws = Ws::new(ws::ONE_CLUSTER, &phase);
    let out = ws.run(&["graph"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(text(&out.stdout).contains("big"), "{}", all(&out));
}
