//! `bootstrap plan`, `graph` and `lint` through the real binary: formats, order, JSON shape, bad input.

mod common;

use common::{bootstrap, text};
use serde_json::Value;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn plan_lists_every_foundation_step_for_both_clusters_in_dependency_order() {
    let st = tmp();
    let out = bootstrap(
        &[
            "plan",
            "--plan",
            "plans/homelab.yaml",
            "--phase",
            "foundation",
            "--format",
            "json",
        ],
        st.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let steps = v["steps"].as_array().expect("steps");
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    for cluster in ["infra", "apps"] {
        for step in [
            "talos-gen-secrets",
            "talos-bootstrap",
            "kubeconfig",
            "nodes-registered",
            "cilium-install",
            "nodes-ready",
            "flux-bootstrap",
        ] {
            let id = format!("{step}/{cluster}");
            assert!(ids.contains(&id.as_str()), "missing {id} in {ids:?}");
        }
    }
    for node in [
        "infra/infra-01",
        "infra/infra-02",
        "infra/infra-03",
        "apps/apps-01",
        "apps/apps-02",
        "apps/apps-03",
    ] {
        assert!(ids.contains(&format!("talos-apply/{node}").as_str()));
    }
    // Every step comes after everything it needs.
    let pos = |id: &str| ids.iter().position(|x| *x == id).unwrap();
    for s in steps {
        for n in s["needs"].as_array().unwrap() {
            assert!(
                pos(n.as_str().unwrap()) < pos(s["id"].as_str().unwrap()),
                "{} before its need {}",
                s["id"],
                n
            );
        }
    }
    // The seed's ordering traps are fixed: nodes are only required Ready after Cilium is installed.
    assert!(pos("nodes-registered/infra") < pos("cilium-install/infra"));
    assert!(pos("cilium-install/infra") < pos("nodes-ready/infra"));
    assert!(pos("nodes-ready/infra") < pos("flux-bootstrap/infra"));
    assert_eq!(ids.last(), Some(&"gate/foundation"));
}

#[test]
fn plan_json_has_the_documented_fields() {
    let st = tmp();
    let out = bootstrap(
        &[
            "plan",
            "--plan",
            "plans/homelab.yaml",
            "--phase",
            "foundation",
            "--format",
            "json",
        ],
        st.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["plan"]["name"], "homelab");
    assert_eq!(v["plan"]["lab"], false);
    for key in [
        "phases_fingerprint",
        "plan_fingerprint",
        "state_fingerprint",
    ] {
        assert_eq!(
            v["basis"][key].as_str().map(str::len),
            Some(64),
            "basis.{key}"
        );
    }
    for key in [
        "steps",
        "gates",
        "prerequisites",
        "to_run",
        "done",
        "changed",
        "failed",
        "interrupted",
        "never_run",
    ] {
        assert!(v["summary"][key].is_u64(), "summary.{key}");
    }
    let phase = &v["phases"][0];
    assert_eq!(phase["id"], "foundation");
    assert!(
        phase["gate"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["id"].is_string()
                && g["text"].is_string()
                && g["check"].is_object()
                && g["command"].is_string()
                && g["timeout"].is_string())
    );
    let step = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "talos-bootstrap/infra")
        .unwrap();
    for key in [
        "id",
        "kind",
        "step",
        "phase",
        "cluster",
        "description",
        "needs",
        "prerequisite",
        "status",
        "wave",
        "commands",
        "check",
        "run",
        "timeout",
        "retry",
        "confirm",
        "env",
        "fingerprint",
    ] {
        assert!(step.get(key).is_some(), "step.{key}");
    }
    assert_eq!(step["kind"], "step");
    assert_eq!(step["status"], "never-run");
    assert_eq!(step["cluster"], "infra");
    assert_eq!(step["confirm"], true);
    assert_eq!(step["run"]["cmd"][0], "talosctl");
    assert!(
        step["commands"]["run"]
            .as_str()
            .unwrap()
            .contains("-n 10.25.11.11"),
        "rendered: {}",
        step["commands"]["run"]
    );
    assert_eq!(step["retry"]["attempts"], 10);
    assert_eq!(step["fingerprint"].as_str().unwrap().len(), 64);
    // Secrets appear only as references.
    let flux = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "flux-bootstrap/apps")
        .unwrap();
    assert_eq!(
        flux["env"]["GITHUB_TOKEN"],
        "op://homelab/github-flux/token"
    );
    // Waves: both clusters side by side.
    let waves = v["waves"].as_array().unwrap();
    assert!(waves.iter().any(|w| {
        let w: Vec<&str> = w
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        w.contains(&"cilium-install/infra") && w.contains(&"cilium-install/apps")
    }));
}

#[test]
fn plan_text_and_markdown_show_rendered_commands_and_gate_items() {
    let st = tmp();
    let out = bootstrap(
        &[
            "plan",
            "--plan",
            "plans/homelab.yaml",
            "--phase",
            "foundation",
        ],
        st.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    let t = text(&out.stdout);
    assert!(
        t.contains("talosctl apply-config --insecure -n 10.25.11.14 -e 10.25.11.14"),
        "{t}"
    );
    assert!(t.contains("nodes-ready/apps: All nodes of apps in Ready state"));
    assert!(t.contains("Parallel waves:"));
    let out = bootstrap(
        &[
            "plan",
            "--plan",
            "plans/homelab.yaml",
            "--phase",
            "foundation",
            "--format",
            "markdown",
        ],
        st.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    let md = text(&out.stdout);
    assert!(md.starts_with("# Bootstrap plan: homelab"));
    assert!(md.contains("| Steps | Gates |"));
    assert!(md.contains("## Phase `foundation`"));
    assert!(md.contains("#### `cilium-install/apps`"));
    assert!(md.contains(
        "helm upgrade --install cilium cilium --repo https://helm.cilium.io --version 1.18.4"
    ));
    assert!(md.contains("| `wireguard/infra` |"));
}

#[test]
fn plan_out_writes_a_file_and_detailed_exitcode_says_work_to_do() {
    let st = tmp();
    let file = st.path().join("saved/plan.json");
    let out = bootstrap(
        &[
            "plan",
            "--phase",
            "foundation",
            "--format",
            "json",
            "--out",
            file.to_str().unwrap(),
            "--detailed-exitcode",
        ],
        st.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "work to do: {}",
        text(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(v["summary"]["to_run"].as_u64().unwrap() > 0);
    assert!(out.stdout.is_empty());
}

#[test]
fn step_selection_by_glob_brings_prerequisites() {
    let st = tmp();
    let out = bootstrap(
        &["plan", "--step", "talos-apply/apps/*", "--format", "json"],
        st.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = v["steps"].as_array().unwrap();
    let selected: Vec<&str> = steps
        .iter()
        .filter(|s| s["prerequisite"] == false)
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        selected,
        [
            "talos-apply/apps/apps-01",
            "talos-apply/apps/apps-02",
            "talos-apply/apps/apps-03"
        ]
    );
    let pre: Vec<&str> = steps
        .iter()
        .filter(|s| s["prerequisite"] == true)
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(
        pre.contains(&"talos-gen-config/apps") && pre.contains(&"talos-gen-secrets/apps"),
        "{pre:?}"
    );
    assert!(!pre.iter().any(|p| p.contains("infra")), "{pre:?}");
}

#[test]
fn unknown_phase_or_step_is_a_usage_error() {
    let st = tmp();
    let out = bootstrap(&["plan", "--phase", "foundations"], st.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no phase named \"foundations\""));
    let out = bootstrap(&["plan", "--step", "nope/*"], st.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no step matches"));
}

#[test]
fn graph_renders_dot_and_mermaid() {
    let st = tmp();
    let out = bootstrap(&["graph", "--phase", "foundation"], st.path());
    assert_eq!(out.status.code(), Some(0));
    let dot = text(&out.stdout);
    assert!(dot.starts_with("digraph bootstrap {"));
    assert!(
        dot.contains("\"cilium-install/infra\" -> \"nodes-ready/infra\";"),
        "{dot}"
    );
    let out = bootstrap(&["graph", "--format", "mermaid"], st.path());
    let m = text(&out.stdout);
    assert!(m.starts_with("flowchart LR"));
    assert!(m.contains("-->"));
}

fn phases_case(name: &str, st: &std::path::Path) -> std::process::Output {
    let dir = format!("tests/fixtures/phases/{name}");
    bootstrap(&["lint", "--phases", &dir], st)
}

#[test]
fn a_cycle_exits_2_and_names_it() {
    let st = tmp();
    let out = phases_case("cycle", st.path());
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out.stderr);
    assert!(e.contains("dependency cycle: a -> b -> c -> a"), "{e}");
    assert!(e.contains("tests/fixtures/phases/cycle/01-a.yaml:4"), "{e}");
    // plan refuses it the same way.
    let out = bootstrap(
        &["plan", "--phases", "tests/fixtures/phases/cycle"],
        st.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("a -> b -> c -> a"));
}

#[test]
fn phase_errors_name_file_line_and_field() {
    let st = tmp();
    let cases = [
        (
            "unknown-needs",
            "01-a.yaml:7:13: steps.talos-bootstrap.needs: step \"talos-bootstrap\" needs \"talos-aply\", which is not a step",
            "did you mean \"talos-apply\"?",
        ),
        (
            "duplicate-id",
            "01-a.yaml:6:9: id: duplicate step id \"a\"",
            "unique",
        ),
        (
            "later-phase",
            "01-a.yaml:5:13: steps.early.needs: step \"early\" needs \"late\", a step of the later phase \"second\"",
            "help:",
        ),
        (
            "undefined-template",
            "01-a.yaml:6:1: run: undefined name in template",
            "cluster.nmae",
        ),
        (
            "unknown-field",
            "01-a.yaml:6:5: steps[0].retries: unknown field `retries`",
            "help:",
        ),
        (
            "missing-step-file",
            "01-a.yaml:4:1: steps.patch: step \"patch\" references \"talos/patches/does-not-exist.yaml\"",
            "create the file",
        ),
    ];
    for (case, want, also) in cases {
        let out = phases_case(case, st.path());
        assert_eq!(out.status.code(), Some(2), "{case}");
        let e = text(&out.stderr);
        assert!(e.contains(want), "{case}: {e}");
        assert!(e.contains(also), "{case}: {e}");
        assert!(
            !e.contains("panicked") && !e.contains("stack backtrace"),
            "{case}: {e}"
        );
    }
    let out = phases_case("good", st.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn every_lint_rule_has_a_failing_and_a_passing_fixture() {
    let st = tmp();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lint");
    let mut rules = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !dir.join("fail.yaml").exists() {
            continue; // a rule family with cases of its own (tests/lint_rules.rs)
        }
        let expect = std::fs::read_to_string(dir.join("expect.txt"))
            .unwrap()
            .trim()
            .to_string();
        let fail = format!("tests/fixtures/lint/{name}/fail.yaml");
        let out = bootstrap(&["lint", "--plan", &fail], st.path());
        let e = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {e}");
        assert!(
            e.contains(&format!("{fail}:")),
            "{name} names the file and line: {e}"
        );
        assert!(
            e.contains(&format!(": {expect}: ")),
            "{name} names the field {expect}: {e}"
        );
        assert!(e.contains("help: "), "{name} says what would fix it: {e}");
        let pass = format!("tests/fixtures/lint/{name}/pass.yaml");
        let out = bootstrap(&["lint", "--plan", &pass], st.path());
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name} pass: {}",
            text(&out.stderr)
        );
        rules += 1;
    }
    assert!(rules >= 12, "only {rules} rules have fixtures");
}

#[test]
fn lint_tools_reports_missing_tools_for_real_plans_only() {
    let st = tmp();
    let out = bootstrap(
        &[
            "lint",
            "--tools",
            "--plan",
            "plans/homelab.yaml",
            "--phase",
            "foundation",
        ],
        st.path(),
    );
    if std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("talosctl").exists()))
    {
        return; // a real talosctl is installed here
    }
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("\"talosctl\" is not on PATH"));
    let out = bootstrap(&["lint", "--tools", "--phase", "foundation"], st.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "the lab stands in for the tools: {}",
        text(&out.stderr)
    );
}

#[test]
fn bad_input_gets_file_line_and_exit_2() {
    let st = tmp();
    let dir = st.path().join("plans");
    std::fs::create_dir_all(&dir).unwrap();
    let lab = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/lab.yaml"),
    )
    .unwrap();
    let cases = [
        ("malformed", "name: [unclosed\n".to_string(), ":1:7: "),
        (
            "wrong-type",
            lab.replace("    id: 2\n", "    id: two\n"),
            "clusters[1].id: invalid u32",
        ),
        (
            "unknown-field",
            lab.replace("    id: 2\n", "    id: 2\n    colour: red\n"),
            "clusters[1].colour: unknown field `colour`",
        ),
        (
            "invalid-cidr",
            lab.replace("pod_cidr: 10.246.0.0/16", "pod_cidr: 10.246.0.0/33"),
            "clusters[1].pod_cidr: invalid CIDR \"10.246.0.0/33\"",
        ),
        (
            "invalid-ip",
            lab.replace("ip: 10.25.11.16", "ip: 10.25.11.316"),
            "clusters[1].nodes[2].ip: invalid IPv4 address syntax",
        ),
        (
            "yes-is-not-a-bool",
            lab.replace("lab: true", "lab: yes"),
            "lab: invalid boolean",
        ),
    ];
    for (name, body, want) in cases {
        let f = dir.join(format!("{name}.yaml"));
        std::fs::write(&f, body).unwrap();
        let out = bootstrap(&["plan", "--plan", f.to_str().unwrap()], st.path());
        let e = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {e}");
        assert!(
            e.contains(&format!("{}", f.display())),
            "{name} names the file: {e}"
        );
        assert!(e.contains(want), "{name}: {e}");
        assert!(e.contains("help: "), "{name}: {e}");
        assert!(!e.contains("panicked"), "{name}: {e}");
    }
    let out = bootstrap(&["plan", "--plan", "plans/missing.yaml"], st.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("plans/missing.yaml: cannot read plan"));
    let empty = st.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = bootstrap(&["plan", "--phases", empty.to_str().unwrap()], st.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("the phase directory has no phase files"));
    let out = bootstrap(&["plan", "--phases", "no/such/dir"], st.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no/such/dir: cannot read the phase directory"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let locked = st.path().join("locked");
        std::fs::create_dir_all(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        let readable = std::fs::read_dir(&locked).is_ok(); // root can read anyway
        let out = bootstrap(&["plan", "--phases", locked.to_str().unwrap()], st.path());
        assert_eq!(out.status.code(), Some(2));
        if !readable {
            assert!(text(&out.stderr).contains("cannot read the phase directory"));
        }
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
