//! The built-in Kubernetes checks, with the kube client over HTTP against the lab's API server.

use std::time::Duration;

use bootstrap::checks::Mode;
use bootstrap_lab::cluster::{Local, Objects};
use serde_json::json;

#[path = "common/api.rs"]
mod api;
use api::{Env, check, env, local};

async fn node(e: &Env, name: &str, ready: bool) {
    let c = local(e);
    let n = c
        .apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}))
        .await
        .unwrap();
    let mut n = n;
    n["status"] = json!({"conditions": [if ready {
        json!({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"})
    } else {
        json!({"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": bootstrap_lab::sim::NOT_READY_MESSAGE})
    }]});
    c.replace_status(n).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_registered_then_ready() {
    let e = env().await;
    node(&e, "infra-01", false).await;
    node(&e, "infra-02", false).await;
    let registered = check("nodes: { cluster: infra, ready: false }");
    let o = e.clusters.evaluate(&registered, Mode::Once).await.unwrap();
    assert!(!o.passed);
    assert_eq!(
        o.detail,
        "2/3 nodes registered (0 Ready); not registered: infra-03"
    );
    node(&e, "infra-03", false).await;
    let o = e.clusters.evaluate(&registered, Mode::Once).await.unwrap();
    assert!(o.passed, "{}", o.detail);
    let ready = check("nodes: { cluster: infra, ready: true }");
    node(&e, "infra-01", true).await;
    let o = e.clusters.evaluate(&ready, Mode::Once).await.unwrap();
    assert!(!o.passed);
    assert!(o.detail.starts_with("1/3 nodes Ready; infra-02 NotReady: KubeletNotReady: container runtime network not ready"), "{}", o.detail);
    assert!(
        o.detail.contains("infra-03 NotReady") && o.detail.contains("cni plugin not initialized")
    );
}

async fn daemonset(e: &Env, generation_seen: i64, updated: i64, available: i64) {
    let c = local(e);
    let ds = c.apply(json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "cilium", "namespace": "kube-system"},
        "spec": {"selector": {"matchLabels": {"k": "v"}}, "template": {"metadata": {"labels": {"k": "v"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}, "updateStrategy": {"type": "RollingUpdate"}}})).await.unwrap();
    let mut ds = ds;
    ds["status"] = json!({"observedGeneration": generation_seen, "desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 3, "updatedNumberScheduled": updated, "numberAvailable": available, "numberMisscheduled": 0});
    c.replace_status(ds).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_follows_kubectl_rules_not_number_ready() {
    let e = env().await;
    let ds =
        check("rollout: { cluster: infra, kind: DaemonSet, namespace: kube-system, name: cilium }");
    let o = e.clusters.evaluate(&ds, Mode::Once).await.unwrap();
    assert_eq!(
        (o.passed, o.detail.as_str()),
        (false, "daemonsets.apps \"cilium\" not found in kube-system")
    );
    daemonset(&e, 0, 3, 3).await;
    let o = e.clusters.evaluate(&ds, Mode::Once).await.unwrap();
    assert_eq!(
        (o.passed, o.detail.as_str()),
        (
            false,
            "ds/cilium: waiting for daemon set spec update to be observed"
        )
    );
    // numberReady is 3 of 3, but only 2 updated pods are available.
    daemonset(&e, 1, 3, 2).await;
    let o = e.clusters.evaluate(&ds, Mode::Once).await.unwrap();
    assert_eq!(
        (o.passed, o.detail.as_str()),
        (false, "ds/cilium: 2 of 3 updated pods available")
    );
    daemonset(&e, 1, 3, 3).await;
    assert!(e.clusters.evaluate(&ds, Mode::Once).await.unwrap().passed);

    let c = local(&e);
    let d = c.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "op", "namespace": "kube-system"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})).await.unwrap();
    let mut d = d;
    d["status"] = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 1});
    c.replace_status(d).await.unwrap();
    let dep =
        check("rollout: { cluster: infra, kind: Deployment, namespace: kube-system, name: op }");
    let o = e.clusters.evaluate(&dep, Mode::Once).await.unwrap();
    assert_eq!(
        (o.passed, o.detail.as_str()),
        (false, "deploy/op: 1 of 2 updated replicas are available")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_on_a_custom_resource_with_observed_generation() {
    let e = env().await;
    let c = local(&e);
    let cond = check(
        "condition: { cluster: infra, apiVersion: kustomize.toolkit.fluxcd.io/v1, kind: Kustomization, namespace: flux-system, name: apps }",
    );
    let o = e.clusters.evaluate(&cond, Mode::Once).await.unwrap();
    assert_eq!(
        (o.passed, o.detail.as_str()),
        (false, "Kustomization flux-system/apps not found")
    );
    c.create(json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "kustomizations.kustomize.toolkit.fluxcd.io"},
        "spec": {"group": "kustomize.toolkit.fluxcd.io", "scope": "Namespaced", "names": {"plural": "kustomizations", "kind": "Kustomization"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}}]}})).await.unwrap();
    let crd = check("crd: { cluster: infra, name: kustomizations.kustomize.toolkit.fluxcd.io }");
    assert!(e.clusters.evaluate(&crd, Mode::Once).await.unwrap().passed);
    c.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}}))
        .await
        .unwrap();
    let k = c.create(json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": "apps", "namespace": "flux-system"}, "spec": {"path": "./apps"}})).await.unwrap();
    let mut k = k;
    k["status"] = json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False", "reason": "DependencyNotReady", "message": "dependency 'flux-system/infra' is not ready"}]});
    let k = c.replace_status(k).await.unwrap();
    let o = e.clusters.evaluate(&cond, Mode::Once).await.unwrap();
    assert_eq!(
        (o.passed, o.detail.as_str()),
        (
            false,
            "Kustomization flux-system/apps: Ready=False (DependencyNotReady): dependency 'flux-system/infra' is not ready"
        )
    );
    // Ready=True but for an older generation is not ready.
    let mut k2 = k.clone();
    k2["spec"]["path"] = json!("./apps2");
    let k2 = c.replace(k2).await.unwrap();
    let mut k3 = k2.clone();
    k3["status"] = json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "message": "Applied revision: main@sha1:abc"}]});
    let k3 = c.replace_status(k3).await.unwrap();
    let o = e.clusters.evaluate(&cond, Mode::Once).await.unwrap();
    assert_eq!(
        (o.passed, o.detail.as_str()),
        (
            false,
            "Kustomization flux-system/apps: observedGeneration 1 is behind generation 2"
        )
    );
    let mut k4 = k3.clone();
    k4["status"]["observedGeneration"] = json!(2);
    c.replace_status(k4).await.unwrap();
    assert!(e.clusters.evaluate(&cond, Mode::Once).await.unwrap().passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exists_with_annotations_and_absent() {
    let e = env().await;
    let c = local(&e);
    c.create(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "postgres-rw", "namespace": "default", "annotations": {"io.cilium/global-service": "true"}}, "spec": {"ports": [{"port": 5432}]}})).await.unwrap();
    let global = check(
        "exists: { cluster: infra, apiVersion: v1, kind: Service, namespace: default, name: postgres-rw, annotations: { service.cilium.io/global: \"true\" } }",
    );
    let o = e.clusters.evaluate(&global, Mode::Once).await.unwrap();
    assert_eq!(
        (o.passed, o.detail.as_str()),
        (
            false,
            "Service default/postgres-rw exists but lacks annotation service.cilium.io/global=true (has none)"
        )
    );
    let mut s = c
        .get("v1", "Service", Some("default"), "postgres-rw")
        .await
        .unwrap()
        .unwrap();
    s["metadata"]["annotations"]["service.cilium.io/global"] = json!("true");
    c.replace(s).await.unwrap();
    assert!(
        e.clusters
            .evaluate(&global, Mode::Once)
            .await
            .unwrap()
            .passed
    );
    let absent = check(
        "absent: { cluster: infra, apiVersion: v1, kind: Service, namespace: default, name: postgres-rw }",
    );
    assert!(
        !e.clusters
            .evaluate(&absent, Mode::Once)
            .await
            .unwrap()
            .passed
    );
    c.delete("v1", "Service", Some("default"), "postgres-rw")
        .await
        .unwrap();
    assert!(
        e.clusters
            .evaluate(&absent, Mode::Once)
            .await
            .unwrap()
            .passed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_mode_passes_when_the_object_becomes_ready_and_times_out_otherwise() {
    let e = env().await;
    daemonset(&e, 1, 3, 1).await;
    let ds =
        check("rollout: { cluster: infra, kind: DaemonSet, namespace: kube-system, name: cilium }");
    let o = e
        .clusters
        .evaluate(&ds, Mode::Wait(Duration::from_millis(600)))
        .await
        .unwrap();
    assert!(!o.passed);
    assert_eq!(
        o.detail,
        "timed out after 600ms: ds/cilium: 1 of 3 updated pods available"
    );
    let store = e.server.store.clone();
    let t = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c = Local(store);
        let mut ds = c
            .get("apps/v1", "DaemonSet", Some("kube-system"), "cilium")
            .await
            .unwrap()
            .unwrap();
        ds["status"]["numberAvailable"] = json!(3);
        c.replace_status(ds).await.unwrap();
    });
    let o = e
        .clusters
        .evaluate(&ds, Mode::Wait(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(o.passed, "{}", o.detail);
    t.await.unwrap();
}

/// Issue 7, defect 9: a wait that cannot come true by itself ends at once, naming the object and
/// the fix: a Deployment past its progress deadline, a Stalled Flux object, a Helm release stuck in
/// pending-upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_fail_at_once_when_the_condition_cannot_come_true() {
    let e = env().await;
    let c = local(&e);
    let mut d = c.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "op", "namespace": "kube-system"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})).await.unwrap();
    d["status"] = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1,
        "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"op-5d4\" has timed out progressing."}]});
    c.replace_status(d).await.unwrap();
    let t = std::time::Instant::now();
    let o = e
        .clusters
        .evaluate(
            &check(
                "rollout: { cluster: infra, kind: Deployment, namespace: kube-system, name: op }",
            ),
            Mode::Wait(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert!(!o.passed && o.terminal, "{o:?}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "waited {:?}",
        t.elapsed()
    );
    assert!(
        o.detail.contains("ProgressDeadlineExceeded")
            && o.detail
                .contains("kubectl -n kube-system describe deployment op"),
        "{}",
        o.detail
    );

    // A CRD for HelmReleases, then one Stalled and one stuck behind a pending Helm operation.
    c.apply(json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "helmreleases.helm.toolkit.fluxcd.io"},
        "spec": {"group": "helm.toolkit.fluxcd.io", "scope": "Namespaced", "names": {"plural": "helmreleases", "kind": "HelmRelease"},
                 "versions": [{"name": "v2", "served": true, "storage": true, "subresources": {"status": {}}}]}})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (name, cond, want) in [
        (
            "stalled",
            json!([{"type": "Ready", "status": "False", "reason": "InstallFailed", "message": "install retries exhausted"}, {"type": "Stalled", "status": "True", "reason": "RetriesExceeded", "message": "Failed to install after 1 attempt(s)"}]),
            "flux reconcile helmrelease stalled -n kube-system",
        ),
        (
            "pending",
            json!([{"type": "Ready", "status": "False", "reason": "UpgradeFailed", "message": "Helm upgrade failed: another operation (install/upgrade/rollback) is in progress"}]),
            "helm rollback pending",
        ),
    ] {
        let mut hr = c.apply(json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": name, "namespace": "kube-system"}, "spec": {"interval": "5m"}})).await.unwrap();
        hr["status"] = json!({"observedGeneration": 1, "conditions": cond});
        c.replace_status(hr).await.unwrap();
        let t = std::time::Instant::now();
        let o = e
            .clusters
            .evaluate(&check(&format!("condition: {{ cluster: infra, apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, namespace: kube-system, name: {name} }}")), Mode::Wait(Duration::from_secs(60)))
            .await
            .unwrap();
        assert!(!o.passed && o.terminal, "{name}: {o:?}");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{name}: waited {:?}",
            t.elapsed()
        );
        assert!(o.detail.contains(want), "{name}: {}", o.detail);
    }
}

/// Issue 7, defect 19: a rollout that waits names the pods holding it back, their nodes and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_rollout_names_the_pod_its_node_and_why() {
    let e = env().await;
    daemonset(&e, 1, 3, 2).await;
    let c = local(&e);
    for (name, node, status) in [
        (
            "cilium-ok",
            "infra-01",
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
        ),
        (
            "cilium-x7k2p",
            "infra-03",
            json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status: [cilium-agent]"}],
            "containerStatuses": [{"name": "cilium-agent", "ready": false, "restartCount": 4, "image": "i", "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}}]}),
        ),
    ] {
        let mut p = c
            .apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "kube-system", "labels": {"k": "v"}},
                "spec": {"nodeName": node, "containers": [{"name": "cilium-agent", "image": "i"}]}}))
            .await
            .unwrap();
        p["status"] = status;
        c.replace_status(p).await.unwrap();
    }
    let o = e
        .clusters
        .evaluate(&check("rollout: { cluster: infra, kind: DaemonSet, namespace: kube-system, name: cilium }"), Mode::Once)
        .await
        .unwrap();
    assert!(!o.passed);
    assert!(
        o.detail
            .contains("pod cilium-x7k2p on infra-03 (Running): CrashLoopBackOff: back-off 40s"),
        "{}",
        o.detail
    );
    assert!(!o.detail.contains("cilium-ok"), "{}", o.detail);
}
