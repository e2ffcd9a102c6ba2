//! The `flow` check against the lab: two meshed clusters with Cilium, CiliumNetworkPolicies
//! applied through the API, probe Pods created by the check over HTTP and run by the lab's kubelet.
//!
//! One lab for the whole story (bringing two clusters up and meshing them is the slow part):
//! default deny plus an allow for one port and an L7 rule; allowed and denied flows (L3/L4, L7
//! method and path); the probe Pod deleted afterwards; a cross-cluster allow that needs
//! `io.cilium.k8s.policy.cluster`; then, through the binary, a permissive policy makes an
//! `expect: denied` gate item fail by name, and the lab's call log names the policy.

#[path = "common/lab.rs"]
mod lab;

use std::path::Path;

use bootstrap::checks::{Clusters, Mode, Outcome};
use bootstrap::spec::phase::ActionSpec;
use bootstrap_lab::cluster::{Objects, Remote};
use lab::{TestLab, err, out};
use serde_json::{Value, json};

fn install_cilium(l: &TestLab, cluster: &str, id: u32) {
    let o = l.tool(
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
            &format!("admin@{cluster}"),
            "--set",
            &format!("cluster.name={cluster}"),
            "--set",
            &format!("cluster.id={id}"),
            "--set",
            "clustermesh.useAPIServer=true",
            // The 1.19 default, set ahead as the upgrade notes advise (facts §2.6, §18.7).
            "--set",
            "clustermesh.policyDefaultLocalCluster=true",
            "--wait",
            "--timeout",
            "30s",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
}

fn mesh(l: &TestLab) {
    let conn = l.tool(
        "cilium",
        &[
            "clustermesh",
            "connect",
            "--context",
            "admin@apps",
            "--destination-context",
            "admin@infra",
        ],
    );
    assert_eq!(conn.status.code(), Some(0), "{}{}", out(&conn), err(&conn));
    let st = l.tool(
        "cilium",
        &[
            "clustermesh",
            "status",
            "--wait",
            "--wait-duration",
            "30s",
            "--context",
            "admin@apps",
        ],
    );
    assert_eq!(st.status.code(), Some(0), "{}{}", out(&st), err(&st));
}

async fn client(l: &TestLab, cluster: &str) -> Remote {
    Remote(
        bootstrap_lab::cluster::client(&l.kubeconfig(), Some(&format!("admin@{cluster}")))
            .await
            .unwrap(),
    )
}

/// Create (or replace) objects on a cluster through its API server; a Pod also gets a Running
/// status with its IP, as its kubelet would report.
async fn put(l: &TestLab, cluster: &str, objs: Vec<Value>) {
    let r = client(l, cluster).await;
    for o in objs {
        let created = r
            .apply(o.clone())
            .await
            .unwrap_or_else(|e| panic!("{o}: {e:#}"));
        if o["kind"] == "Pod" {
            let mut p = created;
            p["status"] = o["status"].clone();
            r.replace_status(p).await.unwrap();
        }
    }
}

fn ns(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn cnp(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"namespace": ns, "name": name}, "spec": spec})
}

fn flow(yaml: &str) -> ActionSpec {
    serde_saphyr::from_str(yaml).expect("flow YAML")
}

fn eval(l: &TestLab, c: &Clusters, yaml: &str) -> Outcome {
    l.rt.block_on(c.evaluate(&flow(yaml), Mode::Once)).unwrap()
}

fn calls(l: &TestLab) -> Vec<Value> {
    std::fs::read_to_string(l.lab_dir().join("calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|x| serde_json::from_str(x).ok())
        .filter(|v: &Value| v["tool"] == "kubelet")
        .collect()
}

#[test]
fn flows_follow_the_clusters_cilium_network_policies() {
    let mut l = TestLab::start(None);
    l.talos_up("infra");
    l.talos_up("apps");
    install_cilium(&l, "infra", 1);
    install_cilium(&l, "apps", 2);
    mesh(&l);

    // Postgres (5432) and its HTTP side (8080, port name http) on infra behind pg-rw, a global
    // Service in both clusters (selector-less on apps).
    l.rt.block_on(async {
        for c in ["infra", "apps"] {
            put(&l, c, vec![ns("databases"), ns("gitlab"), ns("web")]).await;
        }
        put(&l, "infra", vec![
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pg-0", "namespace": "databases", "labels": {"app": "pg"}},
                   "spec": {"containers": [{"name": "pg", "image": "postgres", "ports": [{"containerPort": 5432}, {"name": "http", "containerPort": 8080}]}]},
                   "status": {"phase": "Running", "podIP": "10.244.3.7"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "pg-rw", "namespace": "databases", "annotations": {"service.cilium.io/global": "true"}},
                   "spec": {"selector": {"app": "pg"}, "ports": [{"name": "pg", "port": 5432, "targetPort": 5432}, {"name": "http", "port": 80, "targetPort": "http"}]}}),
        ]).await;
        put(&l, "apps", vec![
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "pg-rw", "namespace": "databases", "annotations": {"service.cilium.io/global": "true"}},
                   "spec": {"ports": [{"name": "pg", "port": 5432}, {"name": "http", "port": 80}]}}),
        ]).await;
        // Default deny in databases; gitlab's webservice may reach 5432, and on 8080 only
        // GET /api/v4/… (the L7 rule). The peer selectors name no cluster.
        put(&l, "infra", vec![
            cnp("databases", "default-deny", json!({"endpointSelector": {}, "ingress": [{}]})),
            cnp("databases", "allow-gitlab", json!({"endpointSelector": {"matchLabels": {"app": "pg"}},
                "ingress": [
                    {"fromEndpoints": [{"matchLabels": {"app": "webservice", "io.kubernetes.pod.namespace": "gitlab"}}],
                     "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}]},
                    {"fromEndpoints": [{"matchLabels": {"app": "webservice", "io.kubernetes.pod.namespace": "gitlab"}}],
                     "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}], "rules": {"http": [{"method": "GET", "path": "/api/v4/.*"}]}}]}]})),
        ]).await;
    });
    let clusters = Clusters::new(&l.plan, l.kubeconfig());
    let from_gitlab = "from: { cluster: infra, namespace: gitlab, labels: { app: webservice } }";

    // L3/L4: the allowed port passes, another port and another namespace are dropped.
    let o = eval(
        &l,
        &clusters,
        &format!(
            "flow: {{ {from_gitlab}, to: {{ namespace: databases, service: pg-rw, port: 5432 }}, expect: allowed }}"
        ),
    );
    assert!(o.passed, "{}", o.detail);
    assert!(
        o.detail
            .contains("allowed as expected (TCP connection made)"),
        "{}",
        o.detail
    );
    let o = eval(
        &l,
        &clusters,
        &format!(
            "flow: {{ {from_gitlab}, to: {{ namespace: databases, endpoint: {{ app: pg }}, port: 22 }}, expect: denied }}"
        ),
    );
    assert!(o.passed, "{}", o.detail);
    let o = eval(
        &l,
        &clusters,
        "flow: { from: { cluster: infra, namespace: web, labels: { app: webservice } }, to: { namespace: databases, service: pg-rw, port: 5432 }, expect: allowed }",
    );
    assert!(!o.passed);
    assert_eq!(
        o.detail.split(": expected").next().unwrap(),
        "flow infra/web {app=webservice} -> infra/databases service pg-rw:5432 (TCP)",
        "{}",
        o.detail
    );
    assert!(
        o.detail
            .contains("expected allowed, but it was denied (no TCP connection within 5s"),
        "{}",
        o.detail
    );
    assert!(o.detail.contains("--verdict DROPPED"), "{}", o.detail);

    // L7: GET /api/v4/… passes; another method or path gets the proxy's 403.
    let l7 = |m: &str, p: &str, expect: &str| {
        eval(
            &l,
            &clusters,
            &format!(
                "flow: {{ {from_gitlab}, to: {{ namespace: databases, service: pg-rw, port: 80 }}, http: {{ method: {m}, path: {p} }}, expect: {expect} }}"
            ),
        )
    };
    let o = l7("GET", "/api/v4/health", "allowed");
    assert!(o.passed, "{}", o.detail);
    assert!(
        o.detail.ends_with("allowed as expected (HTTP 200)"),
        "{}",
        o.detail
    );
    let o = l7("POST", "/api/v4/health", "denied");
    assert!(o.passed, "{}", o.detail);
    assert!(o.detail.contains("HTTP 403"), "{}", o.detail);
    let o = l7("GET", "/admin/api/v4/x", "allowed");
    assert!(!o.passed);
    assert!(
        o.detail
            .contains("expected allowed, but it was denied (HTTP 403"),
        "{}",
        o.detail
    );

    // Every probe Pod is gone, and the kubelet's call log names the deciding policies.
    let left = l.rt.block_on(async {
        let mut n = 0;
        for c in ["infra", "apps"] {
            n += client(&l, c)
                .await
                .list("v1", "Pod", None, Some("bootstrap.dev/flow-probe"))
                .await
                .unwrap()
                .len();
        }
        n
    });
    assert_eq!(left, 0, "probe pods left behind");
    let log = calls(&l);
    assert_eq!(log.len(), 6, "{log:?}");
    assert!(
        log[0]["decided"]
            .as_str()
            .unwrap()
            .contains("CiliumNetworkPolicy databases/allow-gitlab"),
        "{log:?}"
    );
    assert_eq!(
        log[1]["decided"],
        "dropped at ingress: CiliumNetworkPolicy databases/allow-gitlab, CiliumNetworkPolicy databases/default-deny",
        "{log:?}"
    );
    assert_eq!(
        log[4]["decided"], "403 at ingress (L7): CiliumNetworkPolicy databases/allow-gitlab",
        "{log:?}"
    );

    // A Service only on infra: apps' clients could not even resolve it.
    l.rt.block_on(put(&l, "infra", vec![json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "pg-ro", "namespace": "databases"},
        "spec": {"selector": {"app": "pg"}, "ports": [{"port": 5432}]}})]));
    let o = eval(
        &l,
        &clusters,
        "flow: { from: { cluster: apps, namespace: gitlab, labels: { app: webservice } }, to: { cluster: infra, namespace: databases, service: pg-ro, port: 5432 }, expect: denied }",
    );
    assert!(!o.passed);
    assert!(o.detail.ends_with("Service databases/pg-ro does not exist in apps, so its clients cannot resolve it: a global Service needs the same Service in both clusters, annotated service.cilium.io/global: \"true\""), "{}", o.detail);

    // Cross-cluster: with policyDefaultLocalCluster a selector without the cluster label means
    // infra only, so apps' webservice is dropped until a policy names the apps cluster.
    let cross = "flow: { from: { cluster: apps, namespace: gitlab, labels: { app: webservice } }, to: { cluster: infra, namespace: databases, service: pg-rw, port: 5432 }, expect: allowed }";
    let o = eval(&l, &clusters, cross);
    assert!(!o.passed, "{}", o.detail);
    assert!(
        calls(&l).last().unwrap()["decided"]
            .as_str()
            .unwrap()
            .starts_with("dropped at ingress"),
        "{:?}",
        calls(&l)
    );
    l.rt.block_on(put(&l, "infra", vec![cnp("databases", "allow-apps-gitlab", json!({"endpointSelector": {"matchLabels": {"app": "pg"}},
        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "webservice", "io.kubernetes.pod.namespace": "gitlab", "io.cilium.k8s.policy.cluster": "apps"}}],
                     "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}]}]}))]));
    let o = eval(&l, &clusters, cross);
    assert!(o.passed, "{}", o.detail);
    assert!(
        calls(&l).last().unwrap()["decided"]
            .as_str()
            .unwrap()
            .contains("databases/allow-apps-gitlab"),
        "{:?}",
        calls(&l)
    );

    // The lab's Deployments roll out without Pod objects: a ready one stands for the backends of
    // the Service that selects its pod template.
    l.rt.block_on(put(&l, "infra", vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "web"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"name": "http", "containerPort": 8080}]}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}),
    ]));
    let o = l.rt.block_on(clusters.evaluate(&flow(&format!("flow: {{ {from_gitlab}, to: {{ namespace: web, service: web, port: 80 }}, http: {{ method: GET, path: / }}, expect: allowed }}")), Mode::Wait(std::time::Duration::from_secs(10)))).unwrap();
    assert!(o.passed, "{}", o.detail);

    // A permissive policy lets the denied flow through: the gate item that expects it denied
    // fails, by name and flow, through the binary's run.
    l.rt.block_on(put(
        &l,
        "infra",
        vec![cnp(
            "databases",
            "allow-everything",
            json!({"endpointSelector": {}, "ingress": [{"fromEntities": ["all"]}]}),
        )],
    ));
    let handle = l.handle.take().unwrap();
    l.rt.block_on(handle.shutdown());
    let phases = l.work().join("phases");
    std::fs::create_dir_all(&phases).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flow/phases/01-policies.yaml"),
        phases.join("01-policies.yaml"),
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .args(["run", "--phases"])
        .arg(&phases)
        .env("BOOTSTRAP_STATE_DIR", l.state())
        .env("NO_COLOR", "1")
        .env("CI", "1")
        .env_remove("BOOTSTRAP_PLAN")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let all = format!("{}{}", out(&o), err(&o));
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert!(all.contains("db-closed-to-web"), "{all}");
    assert!(
        all.contains("flow infra/web {app=web} -> infra/databases service pg-rw:5432 (TCP): expected denied, but it was allowed (TCP connection made): a policy lets it through"),
        "{all}"
    );
    assert!(
        calls(&l).last().unwrap()["decided"]
            .as_str()
            .unwrap()
            .contains("CiliumNetworkPolicy databases/allow-everything"),
        "{:?}",
        calls(&l)
    );
}

/// Without a CNI a probe Pod stays Pending: the check gives up at its deadline and deletes its Pod;
/// and, level-triggered, a Pending probe is run once Cilium is there (as one found pending after a
/// lab restart is).
#[test]
fn a_pending_probe_runs_once_the_cni_is_there() {
    let l = TestLab::start(None);
    l.talos_up("infra");
    let f = match flow(
        "flow: { from: { cluster: infra, namespace: web, labels: { app: web } }, to: { namespace: databases, endpoint: { app: pg }, port: 5432 }, expect: allowed }",
    ) {
        ActionSpec::Flow(f) => f,
        _ => unreachable!(),
    };
    l.rt.block_on(async {
        put(&l, "infra", vec![ns("web"), ns("databases"),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pg-0", "namespace": "databases", "labels": {"app": "pg"}},
                   "spec": {"containers": [{"name": "pg", "image": "postgres"}]}, "status": {"phase": "Running", "podIP": "10.244.3.7"}})]).await;
    });
    // The check gives up at its deadline, and its guard deletes the Pod it was waiting for.
    let clusters = Clusters::new(&l.plan, l.kubeconfig());
    let o =
        l.rt.block_on(clusters.evaluate(
            &ActionSpec::Flow(f.clone()),
            Mode::Wait(std::time::Duration::from_millis(1500)),
        ))
        .unwrap();
    assert!(!o.passed);
    assert!(
        o.detail.ends_with("the probe pod did not finish in time"),
        "{}",
        o.detail
    );
    let mut left = usize::MAX;
    for _ in 0..40 {
        left = l.rt.block_on(async {
            client(&l, "infra")
                .await
                .list("v1", "Pod", Some("web"), Some("bootstrap.dev/flow-probe"))
                .await
                .unwrap()
                .len()
        });
        if left == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(left, 0, "the timed-out probe pod was left behind");

    let argv = bootstrap::checks::flow::probe_argv("10.244.3.7", 5432, None);
    let pod = serde_json::to_value(bootstrap::checks::flow::probe_pod(
        &f,
        "flow-probe-pending",
        argv,
    ))
    .unwrap();
    let mut pod = pod;
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    l.rt.block_on(async {
        client(&l, "infra").await.create(pod).await.unwrap();
    });
    let phase = || {
        l.rt.block_on(async {
            client(&l, "infra")
                .await
                .get("v1", "Pod", Some("web"), "flow-probe-pending")
                .await
                .unwrap()
                .unwrap()["status"]["phase"]
                .as_str()
                .map(String::from)
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(phase(), None, "a probe ran without a CNI");
    install_cilium(&l, "infra", 1);
    let mut seen = None;
    for _ in 0..100 {
        seen = phase();
        if seen.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(seen.as_deref(), Some("Succeeded"));
}

fn bootstrap(args: &[&str], phases: &str) -> (Option<i32>, String) {
    let st = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .args(args)
        .args(["--phases", phases])
        .env("BOOTSTRAP_STATE_DIR", st.path())
        .env("NO_COLOR", "1")
        .env_remove("BOOTSTRAP_PLAN")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (o.status.code(), format!("{}{}", out(&o), err(&o)))
}

/// What the gate items say in `plan`, and what a mistyped or incomplete flow gets: file, line,
/// field and a fix.
#[test]
fn plan_describes_flows_and_load_errors_point_into_the_file() {
    let (code, text) = bootstrap(&["plan"], "tests/fixtures/flow/plan");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("check: [kube] flow apps/gitlab {app=webservice} -> infra/databases service pg-rw:5432 (TCP): expect allowed (probe pod)"), "{text}");
    // for_each: cluster: both ends default to the item's cluster.
    assert!(text.contains("check: [kube] flow apps/gitlab {app=sidekiq} -> apps/gitlab pods {app=webservice}:8080 POST /api/v4/health: expect denied"), "{text}");

    let (code, text) = bootstrap(&["plan"], "tests/fixtures/flow/typo");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("tests/fixtures/flow/typo/01-policies.yaml:11:49: gate[0].check.flow.from: unknown field `lables`"), "{text}");
    assert!(text.contains("help: did you mean `labels`?"), "{text}");

    let (code, text) = bootstrap(&["plan"], "tests/fixtures/flow/no-target");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("01-policies.yaml:"), "{text}");
    assert!(text.contains("a flow check's `to` needs exactly one of `service` (a Service name) or `endpoint` (pod labels)"), "{text}");
}
