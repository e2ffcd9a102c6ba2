//! Issue 12 through the real binary: a run a person can follow (summaries, the run report, colour
//! and terminals, one `--output json`, help and examples, did-you-mean, "nothing to do"), and the
//! views and files for CI and change tickets (`logs`, `show`, `--junit`, completions, man page,
//! `--version`, `-C` and the project root).

mod common;

#[path = "common/ws.rs"]
mod ws;

use std::path::Path;
use std::process::{Command, Stdio};

use common::text;
use serde_json::Value;
use ws::{Ws, all};

/// One step that runs, one satisfied by its check, one that fails, one that needs the failed one,
/// and a gate.
const MIXED: &str = r#"
id: p
title: P
steps:
  - id: runs
    run: { cmd: [echo, hello] }
  - id: satisfied
    check: { cmd: ["true"] }
    run: { cmd: ["false"] }
  - id: breaks
    needs: [runs]
    run: { shell: "echo boom >&2; exit 3" }
  - id: after
    needs: [breaks]
    run: { cmd: ["true"] }
"#;

const GREEN: &str = r#"
id: p
title: P
steps:
  - id: a
    run: { cmd: [echo, "hello a"] }
  - id: b
    needs: [a]
    check: { cmd: ["true"] }
    run: { cmd: ["false"] }
gate:
  - id: ok
    text: Always fine
    check: { cmd: ["true"] }
"#;

fn last_nonempty(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")
}

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

// ---------------------------------------------------------------- bug 1: the report has the outcome

#[test]
fn the_run_report_says_whether_the_run_passed_and_how_long_it_took() {
    let ws = Ws::new(ws::ONE_CLUSTER, MIXED);
    let out = ws.run(&["run", "--keep-going"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let report = ws.read("state/last-run.md");
    assert!(
        report.contains("**Outcome: failed** in "),
        "no outcome line: {report}"
    );
    assert!(report.contains("1 failed"), "no counts: {report}");
    // The per-run copy is the same complete report.
    let run_id = ws.status()["last_run"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let per_run = ws.read(&format!("state/reports/{run_id}.md"));
    assert_eq!(per_run, report);

    let ws = Ws::new(ws::ONE_CLUSTER, GREEN);
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let report = ws.read("state/last-run.md");
    assert!(report.contains("**Outcome: succeeded** in "), "{report}");
    assert!(report.contains("Tool: bootstrap "), "{report}");
}

#[test]
fn the_report_is_appended_to_the_github_step_summary() {
    let ws = Ws::new(ws::ONE_CLUSTER, GREEN);
    let summary = ws.root.join("step-summary.md");
    std::fs::write(&summary, "earlier\n").unwrap();
    let out = ws
        .cmd(&["run"])
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let s = std::fs::read_to_string(&summary).unwrap();
    assert!(s.starts_with("earlier\n"), "{s}");
    assert!(s.contains("**Outcome: succeeded**"), "{s}");
}

// ---------------------------------------------------------------- bug 2: header and final summary

#[test]
fn plain_lines_start_with_a_header_and_end_with_one_summary_line_with_counts() {
    let ws = Ws::new(ws::ONE_CLUSTER, MIXED);
    let out = ws.run(&["run", "--keep-going"]);
    let err = text(&out.stderr);
    let first = err.lines().next().unwrap_or("");
    assert!(first.contains("Starting run "), "no header: {err}");
    // The summary line comes before the failure details the dispatcher prints after the run.
    let summary = err
        .lines()
        .find(|l| l.contains("Summary ["))
        .unwrap_or_else(|| panic!("no summary: {err}"));
    for want in [
        "failed.",
        "5 steps",
        "1 ran",
        "1 satisfied by check",
        "0 skipped as done",
        "1 failed",
        "2 not started",
        "report: ",
    ] {
        assert!(summary.contains(want), "{want:?} missing in {summary}");
    }
}

#[test]
fn json_run_finished_carries_the_counts() {
    let ws = Ws::new(ws::ONE_CLUSTER, MIXED);
    let out = ws.run(&["run", "--keep-going", "--output", "json"]);
    let evs = json_lines(&out);
    let fin = evs
        .iter()
        .find(|e| e["event"] == "run-finished")
        .expect("run-finished");
    let c = &fin["counts"];
    assert_eq!(c["selected"], 5, "{fin}");
    assert_eq!(c["ran"], 1, "{fin}");
    assert_eq!(c["satisfied"], 1, "{fin}");
    assert_eq!(c["failed"], 1, "{fin}");
    // `after` and the gate `gate/p` need the failed step.
    assert_eq!(c["not_started"], 2, "{fin}");
    assert_eq!(c["skipped"], 0, "{fin}");
}

// ---------------------------------------------------------------- bugs 2–4: the bars on a terminal

/// Run `bootstrap ARGS` on a pseudo-terminal (util-linux `script`), return everything it wrote.
fn on_pty(ws: &Ws, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut line = format!(
        "{} --plan {} --phases {} --state-dir {}",
        common::bin().display(),
        ws.root.join("plan.yaml").display(),
        ws.root.join("phases").display(),
        ws.root.join("state").display()
    );
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    let mut c = Command::new("script");
    c.args(["-qec", &line, "/dev/null"])
        .env_remove("CI")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .env_remove("BOOTSTRAP_PLAN")
        .env_remove("BOOTSTRAP_STATE_DIR")
        .current_dir(&ws.root)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("script(1) from util-linux");
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

fn sgr_count(s: &str) -> usize {
    regex::Regex::new(r"\x1b\[[0-9;]*m")
        .unwrap()
        .find_iter(s)
        .count()
}

#[test]
fn bars_on_a_terminal_show_a_header_and_a_final_summary() {
    let ws = Ws::new(ws::ONE_CLUSTER, GREEN);
    let out = on_pty(&ws, &["run"], &[]);
    assert!(out.contains("Starting run "), "no header: {out:?}");
    assert!(out.contains("Summary ["), "no summary: {out:?}");
    assert!(
        out.contains("succeeded. 3 steps: 2 ran, 1 satisfied by check"),
        "{out:?}"
    );
    // It is the bars (they redraw), and colour is on by default on a terminal.
    assert!(out.contains("\x1b[2K"), "not the bars: {out:?}");
    assert!(sgr_count(&out) > 0, "no colour on a terminal: {out:?}");
}

#[test]
fn color_never_and_no_color_emit_no_sgr_sequence() {
    let ws = Ws::new(ws::ONE_CLUSTER, GREEN);
    let out = on_pty(&ws, &["--color", "never", "run"], &[]);
    assert!(out.contains("Summary ["), "{out:?}");
    assert_eq!(sgr_count(&out), 0, "SGR with --color never: {out:?}");
    std::fs::remove_dir_all(ws.root.join("state")).unwrap();
    let out = on_pty(&ws, &["run"], &[("NO_COLOR", "1")]);
    assert!(out.contains("Summary ["), "{out:?}");
    assert_eq!(sgr_count(&out), 0, "SGR with NO_COLOR: {out:?}");
    // The same decision holds for help, errors and the views.
    for args in [
        &["--color", "never", "run", "--help"][..],
        &["--color", "never", "run", "--no-such-flag"],
        &["--color", "never", "plan"],
        &["--color", "never", "status"],
    ] {
        let out = on_pty(&ws, args, &[]);
        assert_eq!(sgr_count(&out), 0, "{args:?}: {out:?}");
    }
    // …and colour is there without the flag (so the checks above can fail).
    let out = on_pty(&ws, &["plan"], &[]);
    assert!(
        sgr_count(&out) > 0,
        "no colour in plan on a terminal: {out:?}"
    );
}

#[test]
fn term_dumb_on_a_terminal_prints_plain_lines() {
    let ws = Ws::new(ws::ONE_CLUSTER, GREEN);
    let out = on_pty(&ws, &["run"], &[("TERM", "dumb")]);
    assert!(out.contains("start  a"), "no plain lines: {out:?}");
    assert!(out.contains("Summary ["), "{out:?}");
    assert!(
        !out.contains('\x1b'),
        "escape sequences on a dumb terminal: {out:?}"
    );
}

#[test]
fn quiet_bars_print_only_the_summary() {
    let ws = Ws::new(ws::ONE_CLUSTER, GREEN);
    let out = on_pty(&ws, &["-q", "run"], &[]);
    assert!(out.contains("Summary ["), "{out:?}");
    assert!(!out.contains("Starting run"), "header with -q: {out:?}");
    assert!(!out.contains("✔ a"), "step lines with -q: {out:?}");
    assert!(!out.contains("steps ·"), "progress bar with -q: {out:?}");
}

#[test]
fn ci_false_is_not_ci() {
    let ws = Ws::new(ws::ONE_CLUSTER, GREEN);
    let out = on_pty(&ws, &["run"], &[("CI", "false")]);
    assert!(
        out.contains("\x1b[2K"),
        "CI=false on a terminal should draw bars: {out:?}"
    );
    std::fs::remove_dir_all(ws.root.join("state")).unwrap();
    let out = on_pty(&ws, &["run"], &[("CI", "true")]);
    assert!(
        out.contains("start  a"),
        "CI=true gives plain lines: {out:?}"
    );
}

/// Run `bootstrap run` on a pseudo-terminal and type `answer` once the prompt had time to appear.
fn run_on_pty_answering(ws: &Ws, answer: &str) -> (Option<i32>, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(sleep 2; printf '{answer}'; sleep 4) | script -qec '{} --plan {} --phases {} --state-dir {} run' /dev/null",
            common::bin().display(),
            ws.root.join("plan.yaml").display(),
            ws.root.join("phases").display(),
            ws.root.join("state").display()
        ))
        .env_remove("CI")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .current_dir(&ws.root)
        .output()
        .unwrap();
    (
        out.status.code(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

const TWO_CONFIRMS: &str = r#"
id: p
title: P
steps:
  - id: first
    description: Wipe the first disk
    confirm: true
    run: { cmd: [touch, "{W}/marks/first"] }
  - id: second
    needs: [first]
    description: Wipe the second disk
    confirm: true
    run: { cmd: [touch, "{W}/marks/second"] }
"#;

#[test]
fn one_confirmation_prompt_for_the_whole_run_answered_yes() {
    let ws = Ws::new(ws::ONE_CLUSTER, TWO_CONFIRMS);
    let (code, s) = run_on_pty_answering(&ws, "y");
    assert_eq!(code, Some(0), "{s}");
    // One question (dialoguer redraws its line with the answer once answered).
    assert_eq!(s.matches("[y/N]").count(), 1, "{s}");
    // Both steps, with their rendered commands, listed before the one question.
    let asked = s.find("Do you want to perform these actions?").unwrap();
    for want in [
        "first: Wipe the first disk",
        "second: Wipe the second disk",
        "marks/second",
    ] {
        let at = s
            .find(want)
            .unwrap_or_else(|| panic!("{want:?} not listed: {s}"));
        assert!(at < asked, "{want:?} listed after the question: {s}");
    }
    assert!(ws.root.join("marks/first").exists(), "{s}");
    assert!(ws.root.join("marks/second").exists(), "{s}");
    assert!(s.contains("Summary ["), "{s}");
}

#[test]
fn a_declined_confirmation_runs_nothing() {
    let ws = Ws::new(ws::ONE_CLUSTER, TWO_CONFIRMS);
    let (code, s) = run_on_pty_answering(&ws, "n");
    assert_eq!(code, Some(1), "{s}");
    assert!(!ws.root.join("marks/first").exists(), "{s}");
    assert!(!ws.root.join("marks/second").exists(), "{s}");
}

// ---------------------------------------------------------------- bug 6: one --output json

#[test]
fn output_json_works_for_plan_status_lint_graph_and_reset() {
    let ws = Ws::new(ws::ONE_CLUSTER, GREEN);
    for args in [
        &["plan", "--output", "json"][..],
        &["status", "--output", "json"],
        &["lint", "--output", "json"],
        &["graph", "--output", "json"],
        &["reset", "--all", "--output", "json"],
    ] {
        let out = ws.run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", all(&out));
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} did not print JSON ({e}): {}", all(&out)));
        assert!(v.is_object(), "{args:?}: {v}");
    }
    let v: Value = serde_json::from_slice(&ws.run(&["plan", "--output", "json"]).stdout).unwrap();
    assert!(v["basis"]["plan_fingerprint"].is_string(), "{v}");
    let v: Value = serde_json::from_slice(&ws.run(&["graph", "--output", "json"]).stdout).unwrap();
    assert!(v["edges"].as_array().is_some_and(|e| !e.is_empty()), "{v}");
}

// ---------------------------------------------------------------- bug 7: lint and typos

#[test]
fn lint_reports_a_typo_in_an_expanded_step_once_with_a_count() {
    let ws = Ws::new(
        ws::TWO_CLUSTERS,
        r#"
id: p
title: P
steps:
  - id: a
    for_each: cluster
    run: { cmd: [echo, "{{ cluster.nmae }}"] }
"#,
    );
    let out = ws.run(&["lint"]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    let err = text(&out.stderr);
    assert_eq!(
        err.matches("undefined name in template").count(),
        1,
        "{err}"
    );
    assert_eq!(
        err.matches("error[").count(),
        1,
        "reported more than once: {err}"
    );
    assert!(err.contains("lint found 1 error(s)"), "{err}");
}

#[test]
fn plan_reports_a_typo_in_an_expanded_step_once_with_a_count() {
    let ws = Ws::new(
        ws::TWO_CLUSTERS,
        r#"
id: p
title: P
steps:
  - id: a
    for_each: cluster
    run: { cmd: [echo, "{{ cluster.nmae }}"] }
gate:
  - id: g
    text: "{{ cluster.nmae }} is fine"
    for_each: cluster
    check: { cmd: ["true"] }
"#,
    );
    for cmd in [&["plan"][..], &["run"], &["lint"]] {
        let out = ws.run(cmd);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {}", all(&out));
        let err = text(&out.stderr);
        // One report for the step's typo and one for the gate item's, each with its expansions.
        assert_eq!(
            err.matches("undefined name in template").count(),
            2,
            "{cmd:?}: {err}"
        );
        assert_eq!(
            err.matches("(in 2 of 2 expansions: a/infra, a/apps)")
                .count(),
            1,
            "{cmd:?}: {err}"
        );
        assert_eq!(
            err.matches("(in 2 of 2 expansions: g/infra, g/apps)")
                .count(),
            1,
            "{cmd:?}: {err}"
        );
    }
}

#[test]
fn unknown_fields_and_step_typos_get_a_did_you_mean() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: a
    timout: 5m
    run: { cmd: ["true"] }
"#,
    );
    let out = ws.run(&["lint"]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert!(
        text(&out.stderr).contains("did you mean `timeout`?"),
        "{}",
        all(&out)
    );
    assert!(text(&out.stderr).contains("lint found 1 error(s)"));

    let ws = Ws::new(ws::ONE_CLUSTER, GREEN);
    for cmd in ["plan", "run", "status"] {
        let out = ws.run(&[cmd, "--step", "aa"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", all(&out));
        assert!(
            text(&out.stderr).contains("did you mean `a`?"),
            "{cmd}: {}",
            all(&out)
        );
    }
    let out = ws.run(&["show", "gate/q"]);
    assert!(
        text(&out.stderr).contains("did you mean `gate/p`?"),
        "{}",
        all(&out)
    );
}

// ---------------------------------------------------------------- bug 8: --out text

#[test]
fn a_text_plan_saved_with_out_does_not_suggest_from_plan() {
    let ws = Ws::new(ws::ONE_CLUSTER, GREEN);
    let out = ws.run(&["plan", "--format", "text", "--out", "p.txt"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(
        !text(&out.stderr).contains("--from-plan p.txt"),
        "{}",
        all(&out)
    );
    // The text view repeats its summary at the bottom.
    assert!(
        last_nonempty(&ws.read("p.txt")).starts_with("Plan: 2 steps and 1 gates selected"),
        "{}",
        ws.read("p.txt")
    );
    let out = ws.run(&["plan", "--format", "json", "--out", "p.json"]);
    assert!(
        text(&out.stderr).contains("--from-plan p.json"),
        "{}",
        all(&out)
    );
    let out = ws.run(&["run", "--from-plan", "p.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
}

// ---------------------------------------------------------------- bug 9: help

fn help(args: &[&str]) -> String {
    let out = Command::new(common::bin())
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    text(&out.stdout)
}

#[test]
fn every_flag_has_help_global_options_have_a_heading_and_commands_have_examples() {
    for cmd in [
        "plan", "run", "resume", "status", "reset", "unlock", "graph", "lint", "logs", "show",
    ] {
        let h = help(&[cmd]);
        assert!(h.contains("\nGlobal options:\n"), "{cmd}: {h}");
        assert!(h.contains("\nExamples:\n"), "{cmd}: {h}");
        // The command's own options come before the global ones.
        let own = &h[..h.find("\nGlobal options:").unwrap()];
        assert!(
            !own.contains("--state-dir"),
            "{cmd}: globals interleaved: {h}"
        );
        // Every option line says something after its name.
        for l in h.lines().filter(|l| l.trim_start().starts_with('-')) {
            let rest = l.trim_start();
            let described = rest
                .split_once("  ")
                .is_some_and(|(_, d)| !d.trim().is_empty());
            assert!(described, "{cmd}: option without help: {l:?}");
        }
    }
}

// ---------------------------------------------------------------- bug 10: JSON pointers

#[test]
fn json_checks_accept_pointers_for_keys_with_dots_and_keep_the_dot_form() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: pointer
    run:
      json:
        cmd: [echo, '{"metadata":{"labels":{"app.kubernetes.io/name":"cilium"}}}']
        field: /metadata/labels/app.kubernetes.io~1name
        equals: cilium
  - id: dotted
    run:
      json:
        cmd: [echo, '{"items":[{"status":"ok"}]}']
        field: items.0.status
        equals: ok
"#,
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    ws.phase(
        r#"
id: p
title: P
steps:
  - id: pointer
    run:
      json:
        cmd: [echo, '{"metadata":{"labels":{"app.kubernetes.io/name":"envoy"}}}']
        field: /metadata/labels/app.kubernetes.io~1name
        equals: cilium
"#,
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(all(&out).contains("envoy"), "{}", all(&out));
}

// ---------------------------------------------------------------- bug 11: nothing to do

fn journal_len(ws: &Ws) -> usize {
    ws.read("state/journal.jsonl").len()
}

#[test]
fn a_finished_run_run_again_says_nothing_to_do_and_writes_nothing() {
    let ws = Ws::new(ws::ONE_CLUSTER, GREEN);
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let before = journal_len(&ws);
    let reports = std::fs::read_dir(ws.root.join("state/reports"))
        .unwrap()
        .count();
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(text(&out.stderr).contains("No changes."), "{}", all(&out));
    assert!(!text(&out.stderr).contains("skip "), "{}", all(&out));
    let out = ws.run(&["resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(
        text(&out.stderr).contains("Nothing to resume"),
        "{}",
        all(&out)
    );
    let out = ws.run(&["run", "--output", "json"]);
    let evs = json_lines(&out);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0]["event"], "nothing-to-do");
    assert_eq!(journal_len(&ws), before, "the journal grew");
    assert_eq!(
        std::fs::read_dir(ws.root.join("state/reports"))
            .unwrap()
            .count(),
        reports,
        "a new report was written"
    );
    // --refresh still runs (the checks and gates are asked again).
    let out = ws.run(&["run", "--refresh"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(journal_len(&ws) > before);
    // A changed step is work again.
    ws.phase(&GREEN.replace("hello a", "hello again"));
    let out = ws.run(&["run"]);
    assert!(!text(&out.stderr).contains("No changes."), "{}", all(&out));
}

// ---------------------------------------------------------------- logs, show, junit

#[test]
fn logs_prints_the_last_attempt_and_show_tells_everything_about_a_step() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: flaky
    retry: { attempts: 3, backoff: 10ms, max_backoff: 20ms }
    run: { shell: "n=$(cat {W}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {W}/n; echo attempt-$n; [ $n -ge 2 ]" }
"#,
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let out = ws.run(&["logs", "flaky"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let log = text(&out.stdout);
    assert!(log.contains("attempt-2"), "{log}");
    assert!(
        !log.contains("attempt-1"),
        "not only the last attempt: {log}"
    );
    let out = ws.run(&["logs", "flaky", "--attempt", "1"]);
    assert!(text(&out.stdout).contains("attempt-1"), "{}", all(&out));
    assert!(!text(&out.stdout).contains("attempt-2"), "{}", all(&out));
    let out = ws.run(&["logs", "flaky", "--attempt", "7"]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    // -f on a finished step prints the log and ends.
    let out = ws.run(&["logs", "flaky", "-f"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("attempt-2"));

    let out = ws.run(&["show", "flaky"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let s = text(&out.stdout);
    for want in [
        "flaky (step)",
        "run:",
        "state:    done",
        "attempt 2 started",
        "history:",
    ] {
        assert!(s.contains(want), "{want:?} missing: {s}");
    }
    let out = ws.run(&["show", "flaky", "--output", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["recorded"]["outcome"], "done", "{v}");
    assert_eq!(v["history"].as_array().unwrap().len(), 3, "{v}");
}

#[test]
fn junit_has_a_suite_per_phase_and_a_case_per_step_and_gate_item() {
    let ws = Ws::new(ws::ONE_CLUSTER, MIXED);
    let out = ws.run(&["run", "--keep-going", "--junit", "out/junit.xml"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let xml = ws.read("out/junit.xml");
    assert!(xml.contains(r#"<testsuite name="p""#), "{xml}");
    for case in ["runs", "satisfied", "breaks", "after"] {
        assert!(
            xml.contains(&format!(r#"<testcase name="{case}""#)),
            "{case}: {xml}"
        );
    }
    assert!(xml.contains(r#"failures="1""#), "{xml}");
    assert!(xml.contains("<skipped"), "{xml}");

    let ws = Ws::new(ws::ONE_CLUSTER, GREEN);
    let out = ws.run(&["run", "--junit", "j.xml"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let xml = ws.read("j.xml");
    assert!(xml.contains(r#"name="gate/p/ok""#), "{xml}");
    assert!(xml.contains(r#"failures="0""#), "{xml}");
}

// ---------------------------------------------------------------- status, graph

#[test]
fn status_groups_by_phase_filters_and_closes_with_a_count() {
    let ws = Ws::new(ws::ONE_CLUSTER, GREEN);
    assert_eq!(ws.run(&["run", "--step", "a"]).status.code(), Some(0));
    let out = ws.run(&["status"]);
    let s = text(&out.stdout);
    assert!(s.contains("\np — P\n"), "no phase heading: {s}");
    assert!(
        last_nonempty(&s).starts_with("3 steps: 1 done, 0 failed, 2 never run"),
        "{s}"
    );
    assert!(!s.contains("ms"), "raw numbers: {s}");
    // Logs are shown relative to the current directory.
    assert!(s.contains(" state/logs/"), "{s}");
    let out = ws.run(&["status", "--step", "gate/*"]);
    let s = text(&out.stdout);
    assert!(s.contains("gate/p") && !s.contains("\n  a "), "{s}");
    assert!(last_nonempty(&s).starts_with("1 step: "), "{s}");
}

#[test]
fn graph_draws_only_edges_not_implied_and_colours_by_status() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: end
title: The end
steps:
  - id: a
    run: { cmd: ["true"] }
  - id: b
    needs: [a]
    run: { cmd: ["true"] }
"#,
    );
    let out = ws.run(&["graph"]);
    let dot = text(&out.stdout);
    assert!(dot.contains(r#""a" -> "b""#), "{dot}");
    assert!(dot.contains(r#""b" -> "gate/end""#), "{dot}");
    assert!(
        !dot.contains(r#""a" -> "gate/end""#),
        "implied edge drawn: {dot}"
    );
    let out = ws.run(&["graph", "--all-edges"]);
    assert!(text(&out.stdout).contains(r#""a" -> "gate/end""#));
    let out = ws.run(&["graph", "--format", "mermaid"]);
    let m = text(&out.stdout);
    assert!(
        !m.contains("subgraph end"),
        "phase `end` closes the subgraph: {m}"
    );
    assert_eq!(ws.run(&["run", "--step", "a"]).status.code(), Some(0));
    let out = ws.run(&["graph", "--status"]);
    let dot = text(&out.stdout);
    assert!(
        dot.contains(r##""a" [label="a", style=filled, fillcolor="#c8e6c9""##),
        "{dot}"
    );
    assert!(dot.contains(r#"tooltip="never-run""#), "{dot}");
}

// ---------------------------------------------------------------- conventions

#[test]
fn version_names_the_commit_and_the_build_date() {
    let out = Command::new(common::bin())
        .arg("--version")
        .output()
        .unwrap();
    let v = text(&out.stdout);
    let re = regex::Regex::new(
        r"^bootstrap \d+\.\d+\.\d+ \(([0-9a-f]{12}|unknown) \d{4}-\d{2}-\d{2}\)\n$",
    )
    .unwrap();
    assert!(re.is_match(&v), "{v:?}");
}

#[test]
fn completions_offer_step_and_phase_ids_and_the_man_page_renders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let complete = |words: &[&str]| {
        let out = Command::new(common::bin())
            .env("COMPLETE", "fish")
            .env_remove("BOOTSTRAP_PLAN")
            .arg("--")
            .args(words)
            .current_dir(root)
            .output()
            .unwrap();
        text(&out.stdout)
    };
    let steps = complete(&["bootstrap", "logs", "talos-boot"]);
    assert!(
        steps.lines().any(|l| l == "talos-bootstrap/infra"),
        "{steps}"
    );
    let phases = complete(&["bootstrap", "run", "--phase", "found"]);
    assert!(phases.lines().any(|l| l == "foundation"), "{phases}");
    let out = Command::new(common::bin())
        .env("COMPLETE", "bash")
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("complete "),
        "{}",
        text(&out.stdout)
    );
    let out = Command::new(common::bin()).arg("man").output().unwrap();
    let man = text(&out.stdout);
    assert!(man.contains(".TH bootstrap 1"), "{man}");
}

#[test]
fn works_from_a_subdirectory_and_with_chdir() {
    let ws = Ws::new(ws::ONE_CLUSTER, GREEN);
    // The defaults (plans/lab.yaml, phases) found upward from a subdirectory.
    std::fs::create_dir_all(ws.root.join("plans")).unwrap();
    std::fs::rename(ws.root.join("plan.yaml"), ws.root.join("plans/lab.yaml")).unwrap();
    let sub = ws.root.join("deep/er");
    std::fs::create_dir_all(&sub).unwrap();
    let run = |dir: &Path, args: &[&str]| {
        Command::new(common::bin())
            .args(args)
            .env("CI", "true")
            .env_remove("BOOTSTRAP_PLAN")
            .env_remove("BOOTSTRAP_STATE_DIR")
            .current_dir(dir)
            .output()
            .unwrap()
    };
    let out = run(&sub, &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    // The state lives under the project root, not the subdirectory.
    assert!(ws.root.join(".bootstrap/enginemore/journal.jsonl").exists());
    assert!(!sub.join(".bootstrap").exists());
    let out = run(Path::new("/"), &["-C", ws.root.to_str().unwrap(), "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(text(&out.stdout).contains("2 done"), "{}", all(&out));
    let out = run(Path::new("/"), &["-C", "/nonexistent-dir", "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
}

/// A plan in `plans/` whose patch path is relative to the plan file (`../talos/common.yaml`).
fn plan_relative_ws(patch: &str) -> Ws {
    let plan = ws::ONE_CLUSTER.replace(
        "  talos_configs: \"{{ state_dir }}/talos\"\n",
        &format!(
            "  talos_configs: \"{{{{ state_dir }}}}/talos\"\n  patches: {{ common: {patch} }}\n"
        ),
    );
    assert!(plan.contains("patches:"), "{plan}");
    let ws = Ws::new(
        &plan,
        r#"
id: p
title: P
steps:
  - id: patched
    for_each: cluster
    check: { cmd: [test, -f, "{W}/marks/patched"] }
    run: { cmd: [cp, "{{ paths.patches.common }}", "{W}/marks/patched"] }
"#,
    );
    std::fs::create_dir_all(ws.root.join("plans")).unwrap();
    std::fs::rename(ws.root.join("plan.yaml"), ws.root.join("plans/lab.yaml")).unwrap();
    std::fs::create_dir_all(ws.root.join("talos")).unwrap();
    std::fs::write(ws.root.join("talos/common.yaml"), "machine: {}\n").unwrap();
    std::fs::create_dir_all(ws.root.join("deep/er")).unwrap();
    ws
}

fn run_in(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .args(args)
        .env("CI", "true")
        .env("NO_COLOR", "1")
        .env_remove("BOOTSTRAP_PLAN")
        .env_remove("BOOTSTRAP_STATE_DIR")
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn paths_in_a_plan_are_read_from_the_plan_files_directory() {
    let ws = plan_relative_ws("../talos/common.yaml");
    let root = ws.root.to_str().unwrap();
    let sub = ws.root.join("deep/er");
    // From a subdirectory (the project root found upward): the patch is found and passed whole.
    let out = run_in(&sub, &["lint"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let out = run_in(&sub, &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert_eq!(ws.read("marks/patched"), "machine: {}\n");
    // The rendered command names the resolved file.
    let out = run_in(Path::new("/"), &["-C", root, "show", "patched/infra"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let want = ws.root.join("talos/common.yaml");
    assert!(
        text(&out.stdout).contains(&want.display().to_string()),
        "{}",
        all(&out)
    );
    // Started elsewhere (-C, the root, a subdirectory), nothing changed: one fingerprint.
    for (dir, args) in [
        (
            Path::new("/"),
            &["-C", root, "plan", "--detailed-exitcode"][..],
        ),
        (ws.root.as_path(), &["plan", "--detailed-exitcode"]),
        (sub.as_path(), &["plan", "--detailed-exitcode"]),
    ] {
        let out = run_in(dir, args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{dir:?} {args:?}: {}",
            all(&out)
        );
    }
    // Moved elsewhere, the project still has nothing to do: fingerprints keep no absolute path.
    let moved = tempfile::tempdir().unwrap();
    let to = moved.path().join("project");
    std::fs::rename(&ws.root, &to).unwrap();
    let out = run_in(&to.join("deep/er"), &["plan", "--detailed-exitcode"]);
    std::fs::rename(&to, &ws.root).unwrap();
    assert_eq!(out.status.code(), Some(0), "moved: {}", all(&out));
}

#[test]
fn a_missing_plan_relative_file_names_the_plan_line_field_and_resolved_path() {
    let ws = plan_relative_ws("../talos/missing.yaml");
    let root = ws.root.to_str().unwrap();
    for (dir, args) in [
        (ws.root.join("deep/er"), &["lint"][..]),
        (Path::new("/").to_path_buf(), &["-C", root, "lint"]),
    ] {
        let out = run_in(&dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", all(&out));
        let err = text(&out.stderr);
        let line = std::fs::read_to_string(ws.root.join("plans/lab.yaml"))
            .unwrap()
            .lines()
            .position(|l| l.contains("patches:"))
            .unwrap()
            + 1;
        assert!(
            err.contains(&format!("plans/lab.yaml:{line}:"))
                && err.contains(
                    ": paths.patches.common: file \"../talos/missing.yaml\" does not exist"
                ),
            "{args:?}: {err}"
        );
        let resolved = ws.root.join("talos/missing.yaml");
        assert!(
            err.contains(&resolved.display().to_string()),
            "{args:?}: {err}"
        );
        assert_eq!(err.matches("error[").count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn lab_reset_says_that_recorded_outcomes_are_kept() {
    let st = tempfile::tempdir().unwrap();
    let out = common::bootstrap(&["lab", "reset"], st.path());
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let s = all(&out);
    assert!(s.contains("recorded outcomes"), "{s}");
    assert!(s.contains("bootstrap reset --all"), "{s}");
}

#[test]
fn preflight_refuses_a_missing_tool_before_anything_runs() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: first
    run: { cmd: [touch, "{W}/marks/first"] }
  - id: second
    needs: [first]
    run: { cmd: [no-such-tool-xyz, apply] }
"#,
    );
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert!(
        text(&out.stderr).contains("\"no-such-tool-xyz\" is not on PATH"),
        "{}",
        all(&out)
    );
    assert!(
        !ws.root.join("marks/first").exists(),
        "a step ran before the preflight"
    );
    assert!(
        !ws.root.join("state/journal.jsonl").exists(),
        "a run was recorded"
    );
    let out = ws.run(&["run", "--skip-preflight"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    assert!(ws.root.join("marks/first").exists());
}

#[test]
fn plan_shows_what_changed_in_a_step_since_it_ran_as_a_diff() {
    let ws = Ws::new(ws::ONE_CLUSTER, GREEN);
    assert_eq!(ws.run(&["run"]).status.code(), Some(0));
    ws.phase(&GREEN.replace("hello a", "hello again"));
    let out = ws.run(&["plan"]);
    let s = text(&out.stdout);
    assert!(s.contains("changed since it ran:"), "{s}");
    assert!(
        s.contains(r#"~ run.cmd.1: "hello a" -> "hello again""#),
        "{s}"
    );
    let v: Value = serde_json::from_slice(&ws.run(&["plan", "--output", "json"]).stdout).unwrap();
    let a = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "a")
        .unwrap();
    assert_eq!(a["changes"][0]["field"], "run.cmd.1", "{a}");
}

#[test]
fn the_report_lists_every_selected_step_in_wave_order_with_the_fingerprints() {
    let ws = Ws::new(ws::ONE_CLUSTER, MIXED);
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let report = ws.read("state/last-run.md");
    assert!(report.contains("- Plan fingerprint: `"), "{report}");
    assert!(report.contains("- Phases fingerprint: `"), "{report}");
    // Without --keep-going `after` and the gate never start; they are still rows.
    let rows: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| l.split('`').nth(1).unwrap())
        .collect();
    assert_eq!(
        rows,
        ["runs", "satisfied", "breaks", "after", "gate/p"],
        "{report}"
    );
    assert!(report.contains("| `after` | not started |"), "{report}");
}

#[test]
fn preflight_checks_tool_versions_against_the_plan() {
    let ws = Ws::new(
        ws::ONE_CLUSTER,
        r#"
id: p
title: P
steps:
  - id: talk
    run: { cmd: [talosctl, health] }
"#,
    );
    let tool = |version: &str| {
        let p = ws.root.join("bin/talosctl");
        std::fs::write(
            &p,
            format!("#!/bin/sh\nif [ \"$1\" = version ]; then printf 'Client:\\n\\tTag:         {version}\\n'; fi\nexit 0\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    tool("v1.10.2");
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(2), "{}", all(&out));
    assert!(
        text(&out.stderr)
            .contains("talosctl on PATH is 1.10, but the plan says versions.talos: v1.11.5"),
        "{}",
        all(&out)
    );
    assert!(!ws.root.join("state/journal.jsonl").exists());
    tool("v1.11.3");
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
}

/// `lab status --output json`: one document with each cluster, its nodes and its releases.
#[test]
fn lab_status_speaks_json() {
    let st = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bootstrap"))
            .arg("--state-dir")
            .arg(st.path())
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CI", "true")
            .env_remove("BOOTSTRAP_PLAN")
            .env_remove("BOOTSTRAP_STATE_DIR")
            .output()
            .unwrap()
    };
    let out = run(&["run", "--step", "talos-bootstrap/infra", "--yes"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["--output", "json", "lab", "status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], 1);
    let infra = &v["clusters"][0];
    assert_eq!(infra["name"], "infra");
    assert_eq!(infra["bootstrapped"], true);
    assert_eq!(infra["nodes"][0]["talos"], "configured");
    assert_eq!(v["clusters"][1]["bootstrapped"], false);
}

/// Did-you-mean for template names: an undefined name in a template suggests the closest name
/// defined where it was looked up.
#[test]
fn an_undefined_template_name_gets_a_did_you_mean() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("phases")).unwrap();
    std::fs::write(
        t.path().join("phases/01-x.yaml"),
        "id: x\ntitle: X\nsteps:\n  - id: a\n    for_each: cluster\n    run: { cmd: [echo, \"{{ cluster.nmae }}\"] }\n  - id: b\n    run: { cmd: [echo, \"{{ versoins.talos }}\"] }\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .arg("--phases")
        .arg(t.path().join("phases"))
        .arg("--state-dir")
        .arg(t.path().join("state"))
        .arg("plan")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("BOOTSTRAP_PLAN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("did you mean `cluster.name`?"), "{err}");
    assert!(err.contains("did you mean `versions`?"), "{err}");
}
