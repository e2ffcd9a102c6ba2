//! Each stand-in behaviour, through the real binary under the tool's name: exact text and exit code,
//! especially the real tools' traps (facts: shared/facts/real-tools.md).

#[path = "common/lab.rs"]
mod lab;

use lab::{TestLab, err, out};

#[test]
fn talosctl_traps_gen_secrets_twice_bootstrap_twice_insecure_apply_and_kubeconfig_rename() {
    let l = TestLab::start(None);
    let secrets = l.work().join("s.yaml").display().to_string();
    assert_eq!(
        l.tool("talosctl", &["gen", "secrets", "-o", &secrets])
            .status
            .code(),
        Some(0)
    );
    let again = l.tool("talosctl", &["gen", "secrets", "-o", &secrets]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        err(&again),
        format!("file \"{secrets}\" already exists, use --force to overwrite\n")
    );

    // Before any config, bootstrap is not available yet (the transient error).
    let pre = l.tool("talosctl", &["-n", "10.25.11.11", "bootstrap"]);
    assert_eq!(pre.status.code(), Some(1));
    assert!(
        err(&pre).starts_with("error executing bootstrap: rpc error: code = Unavailable"),
        "{}",
        err(&pre)
    );

    l.talos_up("infra");
    let tc = l.talosconfig("infra");
    let twice = l.tool(
        "talosctl",
        &["--talosconfig", &tc, "-n", "10.25.11.11", "bootstrap"],
    );
    assert_eq!(twice.status.code(), Some(1));
    assert_eq!(
        err(&twice),
        "error executing bootstrap: rpc error: code = AlreadyExists desc = etcd data directory is not empty\n"
    );

    let cp = l
        .work()
        .join("infra/controlplane.yaml")
        .display()
        .to_string();
    let insecure = l.tool(
        "talosctl",
        &[
            "apply-config",
            "--insecure",
            "-n",
            "10.25.11.12",
            "--file",
            &cp,
        ],
    );
    assert_eq!(insecure.status.code(), Some(1));
    assert_eq!(
        err(&insecure),
        "error applying new configuration: rpc error: code = Unavailable desc = connection error: desc = \"error reading server preface: remote error: tls: certificate required\"\n"
    );
    let secure = l.tool(
        "talosctl",
        &[
            "--talosconfig",
            &tc,
            "apply-config",
            "-n",
            "10.25.11.12",
            "--file",
            &cp,
        ],
    );
    assert_eq!(secure.status.code(), Some(0));
    assert_eq!(err(&secure), "Applied configuration without a reboot\n");

    // A talosconfig from other secrets is refused with the x509 error.
    l.talos_up("apps");
    let wrong = l.tool(
        "talosctl",
        &[
            "--talosconfig",
            &l.talosconfig("apps"),
            "-n",
            "10.25.11.11",
            "version",
        ],
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        err(&wrong).contains("x509: certificate signed by unknown authority"),
        "{}",
        err(&wrong)
    );

    // kubeconfig without --force renames the context on a non-terminal.
    let kc = l.kubeconfig().display().to_string();
    let renamed = l.tool(
        "talosctl",
        &["--talosconfig", &tc, "-n", "10.25.11.11", "kubeconfig", &kc],
    );
    assert_eq!(renamed.status.code(), Some(0));
    assert_eq!(
        out(&renamed),
        "renamed auth info \"admin@infra\" -> \"admin@infra-1\"\nrenamed context \"admin@infra\" -> \"admin@infra-1\"\n"
    );
    let forced = l.tool(
        "talosctl",
        &[
            "--talosconfig",
            &tc,
            "-n",
            "10.25.11.11",
            "kubeconfig",
            &kc,
            "--force",
        ],
    );
    assert_eq!(
        (forced.status.code(), out(&forced)),
        (Some(0), String::new())
    );

    // Nodes registered NotReady, with the kubelet's message, until a CNI runs.
    let nodes = l.tool(
        "kubectl",
        &["--context", "admin@infra", "get", "nodes", "-o", "json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&nodes.stdout).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for n in items {
        let c = &n["status"]["conditions"][0];
        assert_eq!(
            (
                c["type"].as_str(),
                c["status"].as_str(),
                c["reason"].as_str()
            ),
            (Some("Ready"), Some("False"), Some("KubeletNotReady"))
        );
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .ends_with("cni plugin not initialized")
        );
    }
}

#[test]
fn cilium_install_twice_and_status_exit_codes() {
    let l = TestLab::start(Some(
        r#"[{"id": "stuck", "kind": "rollout-stuck", "cluster": "infra", "namespace": "kube-system", "name": "cilium", "ready": 1}]"#,
    ));
    l.talos_up("infra");
    let first = l.tool(
        "cilium",
        &[
            "install",
            "--context",
            "admin@infra",
            "--version",
            "1.18.4",
            "--set",
            "cluster.name=infra",
        ],
    );
    assert_eq!(first.status.code(), Some(0), "{}", err(&first));
    assert!(out(&first).starts_with("ℹ️  Using Cilium version 1.18.4\n"));
    let second = l.tool(
        "cilium",
        &[
            "install",
            "--context",
            "admin@infra",
            "--version",
            "1.18.4",
            "--set",
            "cluster.name=infra",
        ],
    );
    assert_eq!(second.status.code(), Some(1));
    assert_eq!(
        err(&second),
        "\nError: Unable to install Cilium: cannot re-use a name that is still in use\n"
    );
    assert!(out(&second).contains("Using cluster name \"infra\""));
    // The rollout is stuck at 1 of 3: without --wait, status shows errors and still exits 0.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status = l.tool("cilium", &["status", "--context", "admin@infra"]);
    assert_eq!(status.status.code(), Some(0));
    assert!(
        out(&status).contains("Cilium:             1 errors"),
        "{}",
        out(&status)
    );
    assert!(
        out(&status).contains("2 pods of DaemonSet cilium are not ready"),
        "{}",
        out(&status)
    );
    let waited = l.tool(
        "cilium",
        &[
            "status",
            "--wait",
            "--wait-duration",
            "1s",
            "--context",
            "admin@infra",
        ],
    );
    assert_eq!(waited.status.code(), Some(1));
    assert!(err(&waited).ends_with("\nError: Unable to determine status:  timeout while waiting for status to become successful: context deadline exceeded\n"), "{}", err(&waited));
}

#[test]
fn helm_status_json_pending_upgrade_and_install_twice() {
    let l = TestLab::start(Some(
        r#"[{"id": "pending", "kind": "helm-pending-upgrade", "cluster": "apps", "namespace": "kube-system", "release": "cilium"}]"#,
    ));
    l.talos_up("apps");
    let ctx = ["--kube-context", "admin@apps", "-n", "kube-system"];
    let missing = l.tool(
        "helm",
        &[&["status", "cilium", "-o", "json"][..], &ctx].concat(),
    );
    assert_eq!(
        (missing.status.code(), err(&missing)),
        (Some(1), "Error: release: not found\n".to_string())
    );
    let install = l.tool(
        "helm",
        &[
            &[
                "upgrade",
                "--install",
                "cilium",
                "cilium",
                "--repo",
                "https://helm.cilium.io",
                "--version",
                "1.18.4",
                "--set",
                "kubeProxyReplacement=true",
            ][..],
            &ctx,
        ]
        .concat(),
    );
    assert_eq!(install.status.code(), Some(0), "{}", err(&install));
    assert!(
        out(&install).starts_with(
            "Release \"cilium\" does not exist. Installing it now.\nNAME: cilium\nLAST DEPLOYED: "
        ),
        "{}",
        out(&install)
    );
    assert!(out(&install).contains("\nSTATUS: deployed\nREVISION: 1\n"));
    let st = l.tool(
        "helm",
        &[&["status", "cilium", "-o", "json"][..], &ctx].concat(),
    );
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(
        (
            v["info"]["status"].as_str(),
            v["version"].as_i64(),
            v["config"]["kubeProxyReplacement"].as_bool()
        ),
        (Some("deployed"), Some(1), Some(true))
    );
    let twice = l.tool(
        "helm",
        &[&["install", "cilium", "cilium"][..], &ctx].concat(),
    );
    assert_eq!(
        (twice.status.code(), err(&twice)),
        (
            Some(1),
            "Error: INSTALLATION FAILED: cannot re-use a name that is still in use\n".to_string()
        )
    );
    // The release is left pending-upgrade (fault): every upgrade is refused.
    let upgrade = l.tool(
        "helm",
        &[
            &[
                "upgrade",
                "--install",
                "cilium",
                "cilium",
                "--version",
                "1.18.4",
            ][..],
            &ctx,
        ]
        .concat(),
    );
    assert_eq!(
        (upgrade.status.code(), err(&upgrade)),
        (
            Some(1),
            "Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress\n"
                .to_string()
        )
    );
}

#[test]
fn flux_bootstrap_without_token_fails_on_closed_stdin_and_get_exits_0_when_not_ready() {
    let l = TestLab::start(None);
    l.talos_up("infra");
    let args = [
        "bootstrap",
        "github",
        "--context",
        "admin@infra",
        "--owner",
        "o",
        "--repository",
        "r",
        "--path",
        "kubernetes/clusters/infra",
        "--personal",
    ];
    let no_token = l.tool("flux", &args);
    assert_eq!(no_token.status.code(), Some(1));
    assert_eq!(
        out(&no_token),
        "Please enter your GitHub personal access token (PAT): "
    );
    // The CNI is not installed: Flux's controllers cannot start, so bootstrap times out waiting.
    let mut short = args.to_vec();
    short.extend(["--timeout", "1s"]);
    let stuck = l.tool_env("flux", &short, &[("GITHUB_TOKEN", "t0ken")]);
    assert_eq!(stuck.status.code(), Some(1), "{}", err(&stuck));
    assert!(
        err(&stuck).contains("✗ gitrepository 'flux-system/flux-system' not ready"),
        "{}",
        err(&stuck)
    );
    // flux get exits 0 whatever the readiness.
    let get = l.tool(
        "flux",
        &["get", "kustomizations", "--context", "admin@infra"],
    );
    assert_eq!(get.status.code(), Some(0));
    let table = out(&get);
    assert!(
        table.starts_with("NAME       \tREVISION\tSUSPENDED\tREADY\tMESSAGE                 \t\n"),
        "{table:?}"
    );
    assert!(table.contains("flux-system\t"), "{table}");
    assert!(
        table.contains("\tFalse    \tFalse\twaiting to be reconciled\t\n"),
        "{table:?}"
    );
    let none = l.tool("flux", &["get", "helmreleases", "--context", "admin@infra"]);
    assert_eq!(
        (none.status.code(), err(&none)),
        (
            Some(1),
            "✗ no HelmRelease objects found in \"flux-system\" namespace\n".to_string()
        )
    );
}

#[test]
fn op_items_and_references() {
    let l = TestLab::start(None);
    let missing = l.tool(
        "op",
        &[
            "item",
            "get",
            "talos-infra-secrets",
            "--vault",
            "lab",
            "--format",
            "json",
        ],
    );
    assert_eq!(missing.status.code(), Some(1));
    let e = err(&missing);
    assert!(e.starts_with("[ERROR] ") && e.ends_with(" \"talos-infra-secrets\" isn't an item in the \"lab\" vault. Specify the item with its UUID, name, or domain.\n"), "{e}");
    let file = l.work().join("s.yaml");
    std::fs::write(&file, "cluster: {id: x}\n").unwrap();
    let created = l.tool(
        "op",
        &[
            "item",
            "create",
            "--vault",
            "lab",
            "--title",
            "talos-infra-secrets",
            "--category",
            "Secure Note",
            &format!("secrets.yaml[file]={}", file.display()),
        ],
    );
    assert_eq!(created.status.code(), Some(0), "{}", err(&created));
    let got = l.tool(
        "op",
        &[
            "item",
            "get",
            "talos-infra-secrets",
            "--vault",
            "lab",
            "--format",
            "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(v["title"], "talos-infra-secrets");
    // The plan's secret references resolve in the lab vault.
    let token = l.tool("op", &["read", "op://lab/github-flux/token"]);
    assert_eq!(token.status.code(), Some(0));
    assert!(out(&token).starts_with("lab-") && out(&token).ends_with('\n'));
}

#[test]
fn a_fail_n_times_fault_fails_with_the_given_error_then_succeeds() {
    let l = TestLab::start(Some(
        r#"[{"id": "flaky", "kind": "fail", "matches": "talosctl gen secrets", "times": 2, "stderr": "rpc error: code = Unavailable desc = connection refused", "exit_code": 1}]"#,
    ));
    let f = l.work().join("x.yaml").display().to_string();
    for _ in 0..2 {
        let o = l.tool("talosctl", &["gen", "secrets", "-o", &f]);
        assert_eq!(
            (o.status.code(), err(&o)),
            (
                Some(1),
                "rpc error: code = Unavailable desc = connection refused\n".to_string()
            )
        );
    }
    assert_eq!(
        l.tool("talosctl", &["gen", "secrets", "-o", &f])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn kubectl_stand_in_create_namespace_twice_and_annotate_without_overwrite() {
    let l = TestLab::start(None);
    l.talos_up("infra");
    let k = |args: &[&str]| {
        l.tool(
            "kubectl",
            &[&["--context", "admin@infra"][..], args].concat(),
        )
    };
    assert_eq!(
        out(&k(&["create", "namespace", "demo"])),
        "namespace/demo created\n"
    );
    let again = k(&["create", "namespace", "demo"]);
    assert_eq!(
        (again.status.code(), err(&again)),
        (
            Some(1),
            "Error from server (AlreadyExists): namespaces \"demo\" already exists\n".to_string()
        )
    );
    assert_eq!(
        k(&["annotate", "ns", "demo", "service.cilium.io/global=false"])
            .status
            .code(),
        Some(0)
    );
    let clash = k(&["annotate", "ns", "demo", "service.cilium.io/global=true"]);
    assert_eq!((clash.status.code(), err(&clash)), (Some(1), "error: --overwrite is false but found the following declared annotation(s): 'service.cilium.io/global' already has a value (false)\n".to_string()));
    assert_eq!(
        out(&k(&[
            "annotate",
            "ns",
            "demo",
            "service.cilium.io/global=true",
            "--overwrite"
        ])),
        "namespace/demo annotated\n"
    );
}

/// The lab answers to exactly the tools the core's lint knows it stands in for.
#[test]
fn the_lab_stands_in_for_the_tools_lint_expects() {
    assert_eq!(
        bootstrap_lab::tools::TOOLS,
        bootstrap::lint::tools::STAND_INS
    );
}
