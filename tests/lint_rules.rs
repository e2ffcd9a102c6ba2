//! Every lint rule family against its fixtures, through the real binary.
//!
//! `tests/fixtures/lint/<family>/<case>/`: a case named `fail-*` or `pass-*` holds an optional
//! `plan.yaml` (default `plans/lab.yaml`), an optional `phases/` directory (default `phases/`), an
//! optional `args` file (more lint arguments, one per line) and, for a failing case, an `expect`
//! file: `exit N` and lines `has TEXT` (stderr must contain TEXT) or `not TEXT`.

mod common;

use std::path::{Path, PathBuf};

use common::{bootstrap, text};

const FAMILIES: &[&str] = &[
    "identity",
    "order",
    "contexts",
    "talos-patches",
    "commands",
    "helm-values",
    "versions",
    "shell",
    "deprecated",
    "secrets",
    "coredns",
    "online",
    "check-strength",
    "state",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lint")
}

fn run_case(family: &str, case: &str, extra: &[&str]) -> std::process::Output {
    let rel = format!("tests/fixtures/lint/{family}/{case}");
    let dir = root().join(family).join(case);
    let mut args: Vec<String> = vec!["lint".into()];
    if dir.join("plan.yaml").exists() {
        args.extend(["--plan".into(), format!("{rel}/plan.yaml")]);
    }
    if dir.join("phases").is_dir() {
        args.extend(["--phases".into(), format!("{rel}/phases")]);
    }
    if let Ok(more) = std::fs::read_to_string(dir.join("args")) {
        args.extend(
            more.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string()),
        );
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let st = tempfile::tempdir().expect("tempdir");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    bootstrap(&argv, st.path())
}

fn cases(family: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join(family))
        .unwrap_or_else(|e| panic!("family {family} has no fixtures: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("fail-") || n.starts_with("pass-"))
        .collect();
    v.sort();
    v
}

fn check_family(family: &str) {
    let cs = cases(family);
    assert!(
        cs.iter().any(|c| c.starts_with("fail-")),
        "{family}: no failing fixture"
    );
    assert!(
        cs.iter().any(|c| c.starts_with("pass-")),
        "{family}: no passing fixture"
    );
    for case in cs {
        let out = run_case(family, &case, &[]);
        let err = text(&out.stderr);
        assert!(!err.contains("panicked"), "{family}/{case}: {err}");
        if case.starts_with("pass-") {
            assert_eq!(out.status.code(), Some(0), "{family}/{case}: {err}");
            assert!(
                !err.contains("error[") && !err.contains("warning["),
                "{family}/{case} has findings: {err}"
            );
            continue;
        }
        let expect = std::fs::read_to_string(root().join(family).join(&case).join("expect"))
            .unwrap_or_else(|e| panic!("{family}/{case}/expect: {e}"));
        let mut code = 2;
        let mut has = 0;
        for line in expect.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(n) = line.strip_prefix("exit ") {
                code = n.trim().parse().expect("exit N");
            } else if let Some(t) = line.strip_prefix("has ") {
                assert!(
                    err.contains(t),
                    "{family}/{case}: stderr lacks {t:?}:\n{err}"
                );
                has += 1;
            } else if let Some(t) = line.strip_prefix("not ") {
                assert!(
                    !err.contains(t),
                    "{family}/{case}: stderr has {t:?}:\n{err}"
                );
            } else {
                panic!("{family}/{case}/expect: cannot read {line:?}");
            }
        }
        assert!(has > 0, "{family}/{case}: expect names nothing");
        assert_eq!(out.status.code(), Some(code), "{family}/{case}: {err}");
        assert!(
            err.contains(&format!("tests/fixtures/lint/{family}/{case}/"))
                || err.contains("plans/lab.yaml:")
                || err.contains("phases/"),
            "{family}/{case}: no file named: {err}"
        );
        assert!(
            err.contains("help: "),
            "{family}/{case}: no fix given: {err}"
        );
    }
}

#[test]
fn every_family_has_fixtures_and_a_lint_line_in_the_readme() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for f in FAMILIES {
        assert!(!cases(f).is_empty(), "{f}");
        assert!(
            readme.contains(&format!("`{f}`")),
            "README lists no rule {f}"
        );
    }
}

macro_rules! family_test {
    ($name:ident, $family:literal) => {
        #[test]
        fn $name() {
            check_family($family);
        }
    };
}

family_test!(lint_identity, "identity");
family_test!(lint_order, "order");
family_test!(lint_contexts, "contexts");
family_test!(lint_talos_patches, "talos-patches");
family_test!(lint_commands, "commands");
family_test!(lint_helm_values, "helm-values");
family_test!(lint_versions, "versions");
family_test!(lint_shell, "shell");
family_test!(lint_deprecated, "deprecated");
family_test!(lint_secrets, "secrets");
family_test!(lint_coredns, "coredns");
family_test!(lint_online, "online");
family_test!(lint_check_strength, "check-strength");

#[test]
fn shipped_plans_and_phases_have_no_findings() {
    for plan in ["plans/lab.yaml", "plans/homelab.yaml"] {
        let st = tempfile::tempdir().unwrap();
        let out = bootstrap(&["lint", "--strict", "--plan", plan], st.path());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{plan}: {err}");
        assert!(!err.contains("warning["), "{plan}: {err}");
    }
}

/// Secrets that fixtures write where a reference belongs; no finding may ever quote one.
fn fixture_secrets() -> Vec<String> {
    let re = regex::Regex::new(
        r#"(ghp_[A-Za-z0-9]{8,}|github_pat_[A-Za-z0-9_]{8,}|(?:token|password|secret|TOKEN|PASSWORD|SECRET)[A-Za-z_]*:[ \t]*"?([^"\s{}#]{4,}))"#,
    )
    .unwrap();
    let mut out = Vec::new();
    let mut stack = vec![root()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                let t = std::fs::read_to_string(&p).unwrap();
                for c in re.captures_iter(&t) {
                    let v = c.get(2).unwrap_or_else(|| c.get(1).unwrap()).as_str();
                    if !v.starts_with("op://") && v != "true" && v != "false" {
                        out.push(v.to_string());
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn no_finding_ever_echoes_a_secret() {
    let secrets = fixture_secrets();
    assert!(
        secrets.len() >= 3,
        "fixtures hold too few literal secrets: {secrets:?}"
    );
    let mut checked = 0;
    for entry in std::fs::read_dir(root()).unwrap() {
        let dir = entry.unwrap().path();
        let family = dir.file_name().unwrap().to_string_lossy().into_owned();
        let runs: Vec<std::process::Output> = if dir.join("fail.yaml").exists() {
            let st = tempfile::tempdir().unwrap();
            let f = format!("tests/fixtures/lint/{family}/fail.yaml");
            vec![
                bootstrap(&["lint", "--plan", &f], st.path()),
                bootstrap(&["plan", "--plan", &f], st.path()),
            ]
        } else {
            let mut v: Vec<std::process::Output> = cases(&family)
                .iter()
                .map(|c| run_case(&family, c, &["--strict"]))
                .collect();
            // plan and run refuse literal secrets the same way, masked.
            for c in cases(&family).iter().filter(|c| c.starts_with("fail-")) {
                let rel = format!("tests/fixtures/lint/{family}/{c}");
                let mut args = vec!["plan".to_string()];
                if root().join(&family).join(c).join("plan.yaml").exists() {
                    args.extend(["--plan".into(), format!("{rel}/plan.yaml")]);
                }
                if root().join(&family).join(c).join("phases").is_dir() {
                    args.extend(["--phases".into(), format!("{rel}/phases")]);
                }
                let st = tempfile::tempdir().unwrap();
                let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                v.push(bootstrap(&argv, st.path()));
            }
            v
        };
        for out in runs {
            let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
            for s in &secrets {
                assert!(
                    !all.contains(s.as_str()),
                    "{family}: output echoes {s:?}:\n{all}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20);
}

#[test]
fn json_output_lists_findings_masked() {
    let out = run_case("secrets", "fail-literal-token", &["--output", "json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let f = &v["findings"][0];
    assert_eq!(f["rule"], "secrets");
    assert_eq!(f["severity"], "error");
    assert_eq!(f["field"], "steps.flux-bootstrap.env.GITHUB_TOKEN");
    assert!(f["line"].as_u64().is_some_and(|l| l > 0));
    assert!(
        !text(&out.stdout).contains("ghp_R3al"),
        "{}",
        text(&out.stdout)
    );
    // Warnings alone exit 0, and 2 with --strict.
    let warn = run_case("deprecated", "fail-flux-beta-api", &["--output", "json"]);
    assert_eq!(warn.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&warn.stdout).unwrap();
    assert_eq!(v["errors"], 0);
    assert!(v["warnings"].as_u64().is_some_and(|n| n > 0));
    let strict = run_case("deprecated", "fail-flux-beta-api", &["--strict"]);
    assert_eq!(strict.status.code(), Some(2));
}

#[test]
fn plan_probe_shows_online_findings_as_warnings() {
    let st = tempfile::tempdir().unwrap();
    let out = bootstrap(
        &[
            "plan",
            "--probe",
            "--phase",
            "foundation",
            "--plan",
            "tests/fixtures/lint/online/fail-git-path/plan.yaml",
        ],
        st.path(),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning[online]: tests/fixtures/lint/online/fail-git-path/plan.yaml:73:5: git.paths.apps:"),
        "{err}"
    );
}
