//! The README's first command, end to end on the lab: `bootstrap run --phase foundation` on
//! `plans/lab.yaml` completes with both clusters' foundation gates passing; and a phase file in the
//! seed's order (waiting for Ready before any CNI) fails the way real hardware does, naming the
//! NotReady nodes.

mod common;

use std::process::Command;

use common::{bin, text};

fn run(
    args: &[&str],
    state: &std::path::Path,
    phases: Option<&std::path::Path>,
) -> std::process::Output {
    run_env(args, state, phases, &[])
}

#[test]
fn foundation_completes_on_the_lab_and_a_rerun_does_nothing() {
    let st = tempfile::tempdir().unwrap();
    let out = run(&["run", "--phase", "foundation"], st.path(), None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("gate/foundation"), "{all}");

    // Everything is recorded done: the plan has nothing to do.
    let out = run(
        &["plan", "--phase", "foundation", "--detailed-exitcode"],
        st.path(),
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // A second run is idempotent: it succeeds without re-running the non-idempotent tools.
    let out = run(&["run", "--phase", "foundation"], st.path(), None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn waiting_for_ready_before_the_cni_is_refused_before_anything_runs() {
    let st = tempfile::tempdir().unwrap();
    let phases = st.path().join("phases");
    std::fs::create_dir_all(&phases).unwrap();
    let seed_order = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/phases/01-foundation.yaml"
    ))
    .unwrap()
    .replace(
        "    run:\n      nodes: { ready: false }\n    timeout: 10m",
        "    run:\n      nodes: { ready: true }\n    timeout: 5s",
    );
    assert!(
        seed_order.contains("nodes: { ready: true }\n    timeout: 5s"),
        "the fixture edit applied"
    );
    std::fs::write(phases.join("01-foundation.yaml"), seed_order).unwrap();
    let out = run(
        &["run", "--phase", "foundation"],
        &st.path().join("state"),
        Some(&phases),
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    // Lint sees the deadlock (cni: none, then a wait for Ready before any CNI) and `run` refuses
    // the plan before anything runs (issue 7, defect 7), naming the file, line and field.
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("01-foundation.yaml:"), "{all}");
    assert!(all.contains("steps.nodes-registered.run"), "{all}");
    assert!(all.contains("cni plugin not initialized"), "{all}");
    assert!(
        !st.path().join("state/journal.jsonl").exists(),
        "a refused plan recorded a run"
    );
}

fn run_env(
    args: &[&str],
    state: &std::path::Path,
    phases: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("BOOTSTRAP_STATE_DIR", state)
        .env_remove("BOOTSTRAP_PLAN")
        .env("NO_COLOR", "1")
        .env("CI", "true")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if let Some(p) = phases {
        cmd.arg("--phases").arg(p);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run bootstrap")
}

/// The foundation phase with some step timeouts shortened, for fault rehearsals.
fn short_phases(dir: &std::path::Path, edits: &[(&str, &str)]) -> std::path::PathBuf {
    let phases = dir.join("phases");
    std::fs::create_dir_all(&phases).unwrap();
    let mut text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/phases/01-foundation.yaml"
    ))
    .unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "edit {from:?} applies");
        text = text.replace(from, to);
    }
    std::fs::write(phases.join("01-foundation.yaml"), text).unwrap();
    phases
}

#[test]
fn probe_reports_satisfied_will_run_and_depends_on_earlier_steps() {
    let st = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "plan",
            "--phase",
            "foundation",
            "--probe",
            "--format",
            "json",
        ],
        st.path(),
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let probe = |id: &str| {
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["probe"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        probe("talos-dirs/infra").starts_with("will run"),
        "{}",
        probe("talos-dirs/infra")
    );
    assert_eq!(probe("talos-bootstrap/infra"), "depends on earlier steps");
    // Nothing ran: no Talos secrets exist.
    assert!(!st.path().join("talos/infra/secrets.yaml").exists());
    assert_eq!(
        run(&["run", "--phase", "foundation"], st.path(), None)
            .status
            .code(),
        Some(0)
    );
    // Pretend the state was lost: every check now says the work is already done.
    assert_eq!(
        run(&["reset", "--all"], st.path(), None).status.code(),
        Some(0)
    );
    let out = run(
        &[
            "plan",
            "--phase",
            "foundation",
            "--probe",
            "--format",
            "json",
        ],
        st.path(),
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let probe = |id: &str| {
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["probe"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(probe("talos-gen-secrets/infra"), "satisfied");
    assert_eq!(probe("talos-bootstrap/apps"), "satisfied");
    assert_eq!(
        probe("nodes-ready/infra"),
        "satisfied",
        "a wait step is probed by its condition"
    );
    assert_eq!(
        probe("flux-bootstrap/infra"),
        "depends on earlier steps",
        "flux-check has no check: it always runs"
    );
    // And a run after the reset re-uses the live state: bootstrap is skipped by its check, not re-run.
    let out = run(&["run", "--phase", "foundation"], st.path(), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("skip   talos-bootstrap/infra: check passed"),
        "{}",
        text(&out.stderr)
    );
    // lab status shows what the lab holds; lab reset starts it fresh.
    let status = run(&["lab", "status"], st.path(), None);
    let s = text(&status.stdout);
    assert!(
        s.contains("cluster infra (id 1, context admin@infra), bootstrapped")
            && s.contains("kubernetes: Ready")
            && s.contains("kube-system/cilium"),
        "{s}"
    );
    assert_eq!(
        run(&["lab", "reset"], st.path(), None).status.code(),
        Some(0)
    );
    assert!(!st.path().join("lab").exists());
}

#[test]
fn a_node_that_stays_notready_fails_the_step_and_names_the_node() {
    let st = tempfile::tempdir().unwrap();
    let phases = short_phases(
        st.path(),
        &[(
            "    run:\n      nodes: { ready: true }\n    timeout: 10m",
            "    run:\n      nodes: { ready: true }\n    timeout: 3s",
        )],
    );
    let out = run_env(
        &["run", "--phase", "foundation", "--keep-going"],
        &st.path().join("state"),
        Some(&phases),
        &[(
            "BOOTSTRAP_LAB_FAULTS",
            r#"[{"id": "n", "kind": "node-not-ready", "cluster": "infra", "node": "infra-02"}]"#,
        )],
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("failed: nodes-ready/infra")
            && all.contains("2/3 nodes Ready; infra-02 NotReady: KubeletNotReady"),
        "{all}"
    );
    // --keep-going: the other cluster's branch finished.
    assert!(all.contains("done   flux-bootstrap/apps"), "{all}");
}

#[test]
fn a_hanging_tool_is_killed_at_the_step_timeout() {
    let st = tempfile::tempdir().unwrap();
    let phases = short_phases(
        st.path(),
        &[(
            "      cmd: [flux, check, --pre, --context, \"{{ cluster.context }}\"]\n    timeout: 2m",
            "      cmd: [flux, check, --pre, --context, \"{{ cluster.context }}\"]\n    timeout: 2s",
        )],
    );
    let out = run_env(
        &["run", "--phase", "foundation"],
        &st.path().join("state"),
        Some(&phases),
        &[(
            "BOOTSTRAP_LAB_FAULTS",
            r#"[{"id": "h", "kind": "hang", "matches": "flux check --pre --context admin@apps"}]"#,
        )],
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("fail   flux-check/apps: attempt 1 failed (timed out"),
        "{all}"
    );
    let leftover = Command::new("pgrep")
        .args(["-f", "flux check --pre --context admin@apps"])
        .output()
        .unwrap();
    assert!(
        leftover.stdout.is_empty(),
        "the hung tool survived: {}",
        text(&leftover.stdout)
    );
}

#[test]
fn lab_serve_prints_a_kubeconfig_that_kubectl_can_use_and_stops_on_ctrl_c() {
    use std::io::BufRead;
    let st = tempfile::tempdir().unwrap();
    // Bootstrap the lab's clusters first, so there are nodes to look at.
    assert_eq!(
        run(&["run", "--step", "kubeconfig/*"], st.path(), None)
            .status
            .code(),
        Some(0)
    );
    let mut serve = Command::new(bin())
        .args(["lab", "serve"])
        .env("BOOTSTRAP_STATE_DIR", st.path())
        .env_remove("BOOTSTRAP_PLAN")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(serve.stdout.take().unwrap()).lines();
    let mut kubeconfig = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(p) = line.trim().strip_prefix("export KUBECONFIG=") {
            kubeconfig = Some(p.to_string());
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let kubeconfig = kubeconfig.expect("serve prints the kubeconfig");
    let kubectl = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("a real kubectl on PATH (scripts/ensure-kubectl)");
    let nodes = Command::new(kubectl)
        .args([
            "--kubeconfig",
            &kubeconfig,
            "--context",
            "admin@apps",
            "get",
            "nodes",
            "-o",
            "name",
        ])
        .output()
        .unwrap();
    assert_eq!(
        text(&nodes.stdout),
        "node/apps-01\nnode/apps-02\nnode/apps-03\n",
        "{}",
        text(&nodes.stderr)
    );
    Command::new("kill")
        .args(["-INT", &serve.id().to_string()])
        .status()
        .unwrap();
    let status = serve.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
