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
    cmd.output().expect("run bootstrap")
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
fn waiting_for_ready_before_the_cni_fails_and_names_the_notready_nodes() {
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
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("nodes-registered/"), "{all}");
    assert!(all.contains("NotReady"), "{all}");
    assert!(all.contains("cni plugin not initialized"), "{all}");
    assert!(all.contains("infra-01") || all.contains("apps-01"), "{all}");
}
