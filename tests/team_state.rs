//! Team state through the binary against the lab: the journal and the lock in the infra cluster
//! (Secrets and a Lease), moved there by itself after foundation or by `bootstrap state migrate`,
//! seen from a second state directory, and one writer at a time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::text;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The lab plan with `state:` appended (and its one plan-relative path made absolute), written in
/// `dir`.
fn team_plan(dir: &Path, name: &str, state: &str) -> PathBuf {
    let lab = std::fs::read_to_string(root().join("plans/lab.yaml")).unwrap();
    let patch = root().join("talos/patches/common.yaml");
    let text = lab
        .replace(
            "common: ../talos/patches/common.yaml",
            &format!("common: {}", patch.display()),
        )
        .replacen("name: lab", &format!("name: {name}"), 1);
    assert!(
        text.contains(&format!("name: {name}")),
        "the lab plan's name line moved"
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, format!("{text}\nstate:\n{state}")).unwrap();
    path
}

const AFTER_FOUNDATION: &str = "  backend: kubernetes\n  context: admin@infra\n  namespace: bootstrap-system\n  after: foundation\n  lease_seconds: 6\n";

/// `bootstrap` with this plan and state dir; `lab_home` shares one lab between state dirs.
fn bs(plan: &Path, state: &Path, lab_home: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(common::bin());
    c.arg("--plan")
        .arg(plan)
        .arg("--phases")
        .arg(root().join("phases"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("BOOTSTRAP_PLAN")
        .env_remove("BOOTSTRAP_STATE_DIR")
        .env("NO_COLOR", "1")
        .current_dir(root());
    match lab_home {
        Some(h) => c.env("BOOTSTRAP_LAB_HOME", h),
        None => c.env_remove("BOOTSTRAP_LAB_HOME"),
    };
    c.output().expect("run bootstrap")
}

fn ok(o: &Output, what: &str) -> String {
    let err = text(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{what} failed:\nstdout:\n{}\nstderr:\n{err}",
        text(&o.stdout)
    );
    err
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", text(&o.stdout), text(&o.stderr)))
}

/// Each step's id and status, from `status --output json`.
fn statuses(o: &Output) -> Vec<(String, String)> {
    json(o)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn after_foundation_the_state_moves_into_the_cluster_and_back_by_command() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = team_plan(tmp.path(), "lab", AFTER_FOUNDATION);
    let st = tmp.path().join("state");

    let run = bs(&plan, &st, None, &["run", "--phase", "foundation"]);
    let err = ok(&run, "foundation");
    assert!(
        err.contains("the state moved to namespace bootstrap-system of kube context admin@infra"),
        "{err}"
    );
    assert!(st.join("backend.json").exists());
    assert!(st.join("journal.migrated.jsonl").exists());
    assert!(
        !st.join("journal.jsonl").exists(),
        "the local journal stays behind"
    );

    // Everything the run recorded, including after the move (the gate's record), is in the cluster.
    let show = bs(&plan, &st, None, &["state", "show", "--output", "json"]);
    ok(&show, "state show");
    let doc = json(&show);
    assert_eq!(doc["backend"], "kubernetes");
    assert_eq!(doc["location"]["namespace"], "bootstrap-system");
    assert_eq!(doc["lock"]["holder"], serde_json::Value::Null, "{doc}");
    assert_eq!(doc["last_run"]["outcome"], "succeeded", "{doc}");
    assert!(doc["report"]["bytes"].as_u64().unwrap() > 100, "{doc}");
    let status = bs(&plan, &st, None, &["status", "--output", "json"]);
    ok(&status, "status");
    let rows = statuses(&status);
    assert!(rows.len() > 30, "{rows:?}");
    let done = rows.iter().filter(|(_, s)| s == "done").count();
    assert_eq!(
        done as u64,
        doc["steps_recorded"].as_u64().unwrap(),
        "every recorded step is done: {rows:?}"
    );
    assert!(
        rows.iter()
            .any(|(id, s)| id == "gate/foundation" && s == "done"),
        "{rows:?}"
    );

    // The report teammates see names the host whose disk holds the step logs.
    let report = bs(&plan, &st, None, &["state", "show", "--report"]);
    let md = text(&report.stdout);
    assert!(md.contains("its step logs stay on that machine"), "{md}");
    assert!(md.contains("**Outcome: succeeded**"), "{md}");

    // Nothing to do: read from the cluster.
    let again = bs(&plan, &st, None, &["run", "--phase", "foundation"]);
    assert!(ok(&again, "re-run").contains("No changes."));

    // Back to this machine, and into the cluster again by command: status unchanged each time.
    let back = bs(&plan, &st, None, &["state", "migrate", "--to", "local"]);
    ok(&back, "migrate --to local");
    assert!(!st.join("backend.json").exists());
    let local = bs(&plan, &st, None, &["status", "--output", "json"]);
    assert_eq!(statuses(&local), rows);
    let show = bs(&plan, &st, None, &["state", "show", "--output", "json"]);
    assert_eq!(json(&show)["backend"], "local");

    let up = bs(
        &plan,
        &st,
        None,
        &["state", "migrate", "--to", "kubernetes"],
    );
    ok(&up, "migrate --to kubernetes");
    let remote = bs(&plan, &st, None, &["status", "--output", "json"]);
    assert_eq!(statuses(&remote), rows);
    let twice = bs(
        &plan,
        &st,
        None,
        &["state", "migrate", "--to", "kubernetes"],
    );
    assert_eq!(twice.status.code(), Some(2), "{}", text(&twice.stderr));
    assert!(text(&twice.stderr).contains("already in namespace bootstrap-system"));
}
