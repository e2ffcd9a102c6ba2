//! A real kubectl against the lab's API server (the test fails when kubectl is missing:
//! `scripts/ensure-kubectl` installs one). Each command must exit 0, as against a real cluster.

#[path = "common/lab.rs"]
mod lab;

use std::process::Command;

use lab::TestLab;

fn kubectl_path() -> std::path::PathBuf {
    // Not the lab's stand-in: the real kubectl from PATH, outside the lab's bin dir.
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file() && !p.to_string_lossy().contains("/lab/bin/"))
        .expect("a real kubectl must be on PATH for this test; run scripts/ensure-kubectl")
}

#[test]
fn real_kubectl_works_against_the_lab() {
    let l = TestLab::start(None);
    l.talos_up("infra");
    // Cilium makes the nodes Ready and its DaemonSet rolls out.
    let install = l.tool(
        "helm",
        &[
            "upgrade",
            "--install",
            "cilium",
            "cilium",
            "--version",
            "1.18.4",
            "-n",
            "kube-system",
            "--kube-context",
            "admin@infra",
            "--wait",
            "--timeout",
            "30s",
        ],
    );
    assert_eq!(install.status.code(), Some(0), "{}", lab::err(&install));
    let kubectl = kubectl_path();
    let kc = l.kubeconfig();
    let run = |args: &[&str]| {
        let o = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kc)
            .arg("--context")
            .arg("admin@infra")
            .args(args)
            .current_dir(l.work())
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "kubectl {args:?}: {}{}",
            lab::out(&o),
            lab::err(&o)
        );
        lab::out(&o)
    };
    assert!(run(&["get", "nodes"]).contains("infra-01"));
    let json: serde_json::Value =
        serde_json::from_str(&run(&["get", "nodes", "-o", "json"])).unwrap();
    assert_eq!(json["items"].as_array().unwrap().len(), 3);
    assert!(
        run(&[
            "wait",
            "--for=condition=Ready",
            "node",
            "--all",
            "--timeout=30s"
        ])
        .contains("node/infra-01 condition met")
    );
    assert!(
        run(&[
            "rollout",
            "status",
            "ds/cilium",
            "-n",
            "kube-system",
            "--timeout=30s"
        ])
        .contains("daemon set \"cilium\" successfully rolled out")
    );
    assert_eq!(
        run(&["create", "namespace", "demo"]),
        "namespace/demo created\n"
    );
    let svc = l.work().join("svc.yaml");
    std::fs::write(&svc, "apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: demo}\nspec: {ports: [{port: 80}], selector: {app: echo}}\n").unwrap();
    assert_eq!(
        run(&["apply", "-f", svc.to_str().unwrap()]),
        "service/echo created\n"
    );
    assert_eq!(
        run(&[
            "annotate",
            "svc",
            "echo",
            "-n",
            "demo",
            "service.cilium.io/global=true",
            "--overwrite"
        ]),
        "service/echo annotated\n"
    );
    let got: serde_json::Value =
        serde_json::from_str(&run(&["get", "svc", "echo", "-n", "demo", "-o", "json"])).unwrap();
    assert_eq!(
        got["metadata"]["annotations"]["service.cilium.io/global"],
        "true"
    );
    // A Deployment and a CRD-backed object (the CRD is created first, and starts being served).
    let crd = l.work().join("crd.yaml");
    std::fs::write(&crd, "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.lab.example.com}\nspec:\n  group: lab.example.com\n  scope: Namespaced\n  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n").unwrap();
    assert!(
        run(&["apply", "-f", crd.to_str().unwrap()]).contains(
            "customresourcedefinition.apiextensions.k8s.io/widgets.lab.example.com created"
        )
    );
    let objs = l.work().join("objs.yaml");
    std::fs::write(&objs, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: echo, namespace: demo}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: echo}}\n  template:\n    metadata: {labels: {app: echo}}\n    spec: {containers: [{name: echo, image: nginx}]}\n---\napiVersion: lab.example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: demo}\nspec: {size: 3}\n").unwrap();
    let applied = run(&["apply", "-f", objs.to_str().unwrap()]);
    assert!(
        applied.contains("deployment.apps/echo created")
            && applied.contains("widget.lab.example.com/w1 created"),
        "{applied}"
    );
    let again = run(&["apply", "-f", objs.to_str().unwrap()]);
    assert!(
        again.contains("deployment.apps/echo unchanged")
            && again.contains("widget.lab.example.com/w1 unchanged"),
        "{again}"
    );
    assert!(
        run(&["delete", "-f", objs.to_str().unwrap()]).contains("deployment.apps \"echo\" deleted")
    );
    assert_eq!(
        run(&["delete", "namespace", "demo"]),
        "namespace \"demo\" deleted\n"
    );
}

#[test]
fn kubectl_get_prints_the_servers_table_columns() {
    let l = TestLab::start(None);
    l.talos_up("apps");
    let o = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(l.kubeconfig())
        .args(["--context", "admin@apps", "get", "nodes"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", lab::err(&o));
    let out = lab::out(&o);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[2], row[4]),
        ("apps-01", "NotReady", "control-plane", "v1.34.2")
    );
}
