//! All seven weeks on the lab, through the real binary: one `bootstrap run` passes every gate on
//! both clusters; a second run runs nothing; the failover drill runs only when asked for;
//! `kill -9` at several points then `resume` converges without repeating an irreversible action;
//! each injected fault ends as a user needs (a transient error retried, an unrecorded success
//! recognised, a stuck component failing its gate by object, field and value, a resume after the
//! fault is gone finishing); the homelab plan's change-window document is current and lints clean.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, text};

/// Two labs at once at most: each runs two simulated clusters, and the machine has two cores.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
static SLOTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn slot() -> impl Drop {
    struct Slot;
    impl Drop for Slot {
        fn drop(&mut self) {
            SLOTS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    loop {
        {
            let _g = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
            if SLOTS.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                SLOTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return Slot;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Hold both slots: a run whose wall time is measured has the machine to itself (cargo runs one
/// test binary at a time, so only this file's tests compete).
fn exclusive() -> impl Drop {
    struct All;
    impl Drop for All {
        fn drop(&mut self) {
            SLOTS.fetch_sub(2, std::sync::atomic::Ordering::SeqCst);
        }
    }
    loop {
        {
            let _g = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
            if SLOTS.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                SLOTS.fetch_add(2, std::sync::atomic::Ordering::SeqCst);
                return All;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cmd(args: &[&str], state: &Path, phases: Option<&Path>, faults: Option<&str>) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .env("BOOTSTRAP_STATE_DIR", state)
        .env_remove("BOOTSTRAP_PLAN")
        .env_remove("BOOTSTRAP_LAB_FAULTS")
        .env("NO_COLOR", "1")
        .env("CI", "true")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if let Some(p) = phases {
        c.arg("--phases").arg(p);
    }
    if let Some(f) = faults {
        c.env("BOOTSTRAP_LAB_FAULTS", f);
    }
    c
}

fn run(args: &[&str], state: &Path, phases: Option<&Path>, faults: Option<&str>) -> Output {
    cmd(args, state, phases, faults)
        .output()
        .expect("run bootstrap")
}

fn all(o: &Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

fn ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "{}", all(o));
}

const PHASES: [&str; 6] = [
    "foundation",
    "mesh",
    "storage",
    "platform",
    "security",
    "apps",
];

/// The phases with every gate item's timeout cut to a few seconds (failing items would otherwise
/// wait minutes).
fn fast_phases(dir: &Path) -> PathBuf {
    let out = dir.join("phases");
    std::fs::create_dir_all(&out).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("phases");
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let t = std::fs::read_to_string(e.path()).unwrap();
        let (steps, gate) = t.split_once("\ngate:\n").expect("a gate");
        let gate: String = gate
            .lines()
            .filter(|l| !l.starts_with("    timeout: "))
            .map(|l| format!("{l}\n"))
            .collect();
        let gate = gate.replace("\n    check:\n", "\n    timeout: 6s\n    check:\n");
        std::fs::write(out.join(&name), format!("{steps}\ngate:\n{gate}")).unwrap();
    }
    out
}

/// JSON events of a `--output json` run.
fn events(o: &Output) -> Vec<serde_json::Value> {
    text(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Steps (not gates) a run started.
fn started(ev: &[serde_json::Value]) -> Vec<String> {
    ev.iter()
        .filter(|e| e["event"] == "step-started")
        .filter_map(|e| e["id"].as_str())
        .filter(|id| !id.starts_with("gate/"))
        .map(String::from)
        .collect()
}

/// The lab's record of tool invocations (lab/calls.jsonl): how many contain every needle.
fn calls(state: &Path, needles: &[&str]) -> usize {
    std::fs::read_to_string(state.join("lab/calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

#[test]
fn all_seven_weeks_pass_on_both_clusters_and_a_second_run_runs_nothing() {
    let _slot = exclusive();
    let st = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let o = run(&["run"], st.path(), None, None);
    let wall = t.elapsed();
    ok(&o);
    let out = all(&o);
    for p in PHASES {
        assert!(out.contains(&format!("gate   {p}: passed")), "{p}:\n{out}");
    }
    for item in [
        "✔ postgres-ready-instances",
        "✔ postgres-healthy",
        "✔ keycloak-database",
        "✔ dragonfly-ready",
        "✔ object-store-ready",
        "✔ velero-bsl-available/infra",
        "✔ velero-bsl-available/apps",
        "✔ keycloak-ready",
        "✔ apps-reaches-postgres",
        "✔ global-keycloak/apps",
        "✔ cluster-issuer/infra",
        "✔ cluster-issuer/apps",
        "✔ cloudflared",
        "✔ arc-runner-set",
        "✔ flow-gitlab-to-postgres",
        "✔ flow-stranger-to-postgres",
        "✔ flow-local-stranger-to-postgres",
        "✔ flow-gitlab-to-its-bucket",
        "✔ flow-gitlab-to-velero-bucket",
        "✔ database-gitlab",
        "✔ gitlab-extensions",
        "✔ roles-managed",
        "✔ mattermost-stable",
        "✔ flow-mattermost-to-postgres",
        "✔ flow-gitlab-to-keycloak",
        "✔ flow-harbor-to-object-store",
        "✔ no-sidecar-gitlab",
        "✔ wireguard/apps",
        "✔ postgres-all-ready",
    ] {
        assert!(out.contains(item), "{item} in:\n{out}");
    }
    // Manual items are listed, never ticked; the drill did not run.
    assert!(out.contains("☐ failure-recovery (manual)"), "{out}");
    assert!(!out.contains("start  postgres-failover"), "{out}");
    assert!(
        wall < Duration::from_secs(30),
        "all seven weeks took {wall:?}"
    );

    // A second full run runs no action.
    let o = run(&["run", "--output", "json"], st.path(), None, None);
    ok(&o);
    let ev = events(&o);
    assert!(started(&ev).is_empty(), "{:?}", started(&ev));
    let nothing = ev
        .iter()
        .find(|e| e["event"] == "nothing-to-do")
        .and_then(|e| e["steps"].as_u64())
        .unwrap_or(0);
    let ran = ev
        .iter()
        .find(|e| e["event"] == "run-finished")
        .and_then(|e| e["counts"]["ran"].as_u64());
    assert!(nothing > 70 || ran == Some(0), "{}", text(&o.stdout));

    // The failover drill runs when asked for: a Postgres pod deleted, every instance Ready again.
    let o = run(
        &["run", "--step", "postgres-failover", "--yes"],
        st.path(),
        None,
        None,
    );
    ok(&o);
    let out = all(&o);
    assert!(out.contains("done   postgres-failover"), "{out}");
    assert_eq!(
        calls(st.path(), &["kubectl", "delete", "pod", "postgres-1"]),
        1
    );
    // …and the week-7 gate still holds afterwards.
    let o = run(&["run", "--phase", "apps"], st.path(), None, None);
    ok(&o);
}

/// kill -9 the whole run at several instants over weeks 5-7, resuming in between: the end state
/// is the same, and nothing irreversible happened twice (the CA minted once, each credential
/// Secret created once).
#[test]
fn kill_9_across_weeks_5_to_7_then_resume_converges() {
    let _slot = slot();
    let st = tempfile::tempdir().unwrap();
    ok(&run(&["run", "--phase", "storage"], st.path(), None, None));
    for delay in [700u64, 1500, 2500] {
        let mut child = cmd(&["run"], st.path(), None, None)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = child.wait();
        // Resume once more before the next kill (the killed run left its record).
        let mut child = cmd(&["resume"], st.path(), None, None)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay / 2));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = child.wait();
    }
    let o = run(&["resume"], st.path(), None, None);
    let out = all(&o);
    // A resume may find the last killed run had nothing left; then a run says so.
    if !out.contains("Nothing to resume") {
        ok(&o);
    }
    let o = run(&["run"], st.path(), None, None);
    ok(&o);
    for p in PHASES {
        assert!(
            all(&o).contains(&format!("gate   {p}: passed")) || all(&o).contains("No changes."),
            "{}",
            all(&o)
        );
    }
    // Irreversible actions: once each.
    assert_eq!(
        calls(st.path(), &["op", "item", "create", "internal-ca"]),
        1,
        "the internal CA was minted more than once"
    );
    for (secret, clusters) in [
        ("pg-role-gitlab", 1),
        ("keycloak-db", 1),
        ("velero-s3-credentials", 2),
        ("cloudflared-tunnel", 1),
        ("gitlab-object-storage", 1),
    ] {
        let n = calls(
            st.path(),
            &["kubectl", "create", "secret", secret, "\"exit\":0"],
        );
        assert_eq!(n, clusters, "{secret}: {n} successful creates");
    }
}

#[test]
fn faults_in_weeks_5_to_7_end_as_a_user_needs() {
    let _slot = slot();
    let st = tempfile::tempdir().unwrap();
    let phases = fast_phases(st.path());
    ok(&run(
        &["run", "--phase", "storage"],
        st.path(),
        Some(&phases),
        None,
    ));
    // A transient error (the API server refusing a connection once) is retried and passes; a
    // Postgres instance that never becomes ready fails the gate naming object, field and value.
    let faults = r#"[
        {"id": "flaky", "kind": "fail", "matches": "flux reconcile kustomization platform-operators", "times": 1,
         "stderr": "✗ Post \"https://127.0.0.1:6443/apis\": dial tcp 127.0.0.1:6443: connect: connection refused"},
        {"id": "pg", "kind": "rollout-stuck", "cluster": "infra", "namespace": "databases", "name": "postgres", "ready": 2}
    ]"#;
    let o = run(
        &["run", "--phase", "platform"],
        st.path(),
        Some(&phases),
        Some(faults),
    );
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    let out = all(&o);
    for e in [
        "retry  platform-reconcile/infra: attempt 1 failed",
        "start  platform-reconcile/infra (attempt 2)",
        "done   platform-reconcile/infra",
        "✗ postgres-ready-instances: timed out after 6s: Cluster databases/postgres: .status.readyInstances is \"2\" (want \"3\")",
        "✗ postgres-healthy: timed out after 6s: Cluster databases/postgres: .status.phase is \"Creating a new replica\" (want \"Cluster in healthy state\")",
        "✗ postgres-ready: timed out after 6s: Cluster databases/postgres: Ready=False (ClusterIsNotReady): Cluster Is Not Ready",
    ] {
        assert!(out.contains(e), "missing {e:?} in:\n{out}");
    }
    // What was not broken still passes.
    assert!(out.contains("✔ dragonfly-ready"), "{out}");
    assert!(out.contains("✔ object-store-ready"), "{out}");

    // With the fault gone, resume finishes the phase.
    let o = run(&["resume"], st.path(), Some(&phases), None);
    ok(&o);
    assert!(all(&o).contains("gate   platform: passed"), "{}", all(&o));

    // An unrecorded success: the tunnel token was made, but its record is lost (reset). The next
    // run's check finds the Secret, and the step is satisfied without running again.
    ok(&run(
        &["run", "--phase", "security"],
        st.path(),
        Some(&phases),
        None,
    ));
    ok(&run(
        &["reset", "tunnel-token"],
        st.path(),
        Some(&phases),
        None,
    ));
    let o = run(
        &["run", "--phase", "security", "--output", "json"],
        st.path(),
        Some(&phases),
        None,
    );
    ok(&o);
    let ev = events(&o);
    let finished = ev
        .iter()
        .find(|e| e["event"] == "step-finished" && e["id"] == "tunnel-token")
        .unwrap_or_else(|| panic!("{}", text(&o.stdout)));
    assert_eq!(finished["outcome"], "satisfied", "{finished}");
    assert_eq!(
        calls(
            st.path(),
            &["kubectl", "create", "secret", "cloudflared-tunnel"]
        ),
        1
    );
}

#[test]
fn a_stuck_runner_set_fails_its_gate_by_object_field_and_value() {
    let _slot = slot();
    let st = tempfile::tempdir().unwrap();
    let phases = fast_phases(st.path());
    ok(&run(
        &["run", "--phase", "platform"],
        st.path(),
        Some(&phases),
        None,
    ));
    let faults = r#"[
        {"id": "arc", "kind": "rollout-stuck", "cluster": "apps", "namespace": "arc-runners", "name": "arc-runner-set", "ready": 0}
    ]"#;
    let o = run(
        &["run", "--phase", "security"],
        st.path(),
        Some(&phases),
        Some(faults),
    );
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    let out = all(&o);
    assert!(
        out.contains("✗ arc-runner-set: timed out after 6s: AutoscalingRunnerSet arc-runners/arc-runner-set: .status.phase is \"Pending\" (want \"Running\")"),
        "{out}"
    );
    // Everything else of the week holds.
    assert!(out.contains("✔ cluster-issuer/apps"), "{out}");
    assert!(out.contains("✔ cloudflared"), "{out}");
}

/// The plan command that renders docs/change-window.md (see scripts/change-window).
fn change_window() -> String {
    let o = Command::new(bin())
        .args([
            "plan",
            "--plan",
            "plans/homelab.yaml",
            "--state-dir",
            ".bootstrap/change-window",
            "--format",
            "markdown",
        ])
        .env_remove("BOOTSTRAP_PLAN")
        .env_remove("BOOTSTRAP_STATE_DIR")
        .env("NO_COLOR", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    ok(&o);
    // Paths under the checkout are shown relative to it, so the committed document is the same
    // in every clone (scripts/change-window does the same).
    text(&o.stdout).replace(&format!("{}/", env!("CARGO_MANIFEST_DIR")), "")
}

#[test]
fn the_change_window_document_is_current_and_the_homelab_plan_lints_clean() {
    let st = tempfile::tempdir().unwrap();
    ok(&run(
        &["lint", "--plan", "plans/homelab.yaml"],
        st.path(),
        None,
        None,
    ));
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/change-window.md");
    let committed = std::fs::read_to_string(&doc).unwrap_or_default();
    let now = change_window();
    assert!(
        committed == now,
        "docs/change-window.md is stale: run scripts/change-window and commit it"
    );
    for p in PHASES {
        assert!(now.contains(&format!("## Phase `{p}`")), "{p}");
    }
    for item in [
        "postgres-ready-instances",
        "velero-bsl-available/apps",
        "cluster-issuer/infra",
        "arc-runner-set",
        "flow-stranger-to-postgres",
        "database-gitlab",
        "[manual] bootstrap run --step postgres-failover --yes",
    ] {
        assert!(now.contains(item), "{item}");
    }
    // The drill is not part of a plain plan: it runs only when --step names it.
    assert!(
        !now.contains("`postgres-failover`"),
        "the drill is in the plain plan"
    );
}

/// Put a file into the lab's Git remote before the lab first starts (the lab only adds missing
/// files of the reference tree), as a user's repository would differ.
fn gitops_file(state: &Path, rel: &str, edit: impl FnOnce(String) -> String) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("lab/gitops")
        .join(rel);
    let dst = state.join("lab/gitops").join(rel);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::write(&dst, edit(std::fs::read_to_string(src).unwrap())).unwrap();
}

/// The seed's "default deny" (`ingress: [{fromEntities: [cluster]}]`) in place of ours: it admits
/// every endpoint of the cluster, so the flow the gate expects denied gets through and the gate
/// fails by the item's name, while the allowed flows still pass.
#[test]
fn the_seeds_default_deny_lets_the_denied_flow_through_and_fails_the_gate_by_name() {
    let _slot = slot();
    let st = tempfile::tempdir().unwrap();
    gitops_file(
        st.path(),
        "kubernetes/security/policies/infra/databases.yaml",
        |t| {
            t.replace(
                "  endpointSelector: {}\n  ingress:\n    - {}\n",
                "  endpointSelector: {}\n  ingress:\n    - fromEntities:\n        - cluster\n",
            )
        },
    );
    let phases = fast_phases(st.path());
    let o = run(
        &["run", "--phase", "security"],
        st.path(),
        Some(&phases),
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    let out = all(&o);
    // The probe may answer at once or only at the deadline; either way the item is named with
    // the flow and what it met.
    assert!(out.contains("✗ flow-local-stranger-to-postgres: "), "{out}");
    assert!(
        out.contains("flow infra/mesh-test {app=echo} -> infra/databases service postgres-rw:5432 (TCP): expected denied, but it was allowed"),
        "{out}"
    );
    assert!(out.contains("✔ flow-stranger-to-postgres"), "{out}");
    assert!(out.contains("✔ flow-gitlab-to-postgres"), "{out}");
}
