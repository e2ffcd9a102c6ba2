//! The `field`, `kustomizations` and `helmreleases` checks and the HelmRelease values behind
//! `helm_values`, with the kube client over HTTP against the lab's API server.

use std::time::Duration;

use bootstrap::checks::Mode;
use bootstrap_lab::cluster::{Local, Objects};
use serde_json::{Value, json};

#[path = "common/api.rs"]
mod api;
use api::{check, env};

async fn crd(c: &Local, group: &str, plural: &str, kind: &str, version: &str) {
    c.create(
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": "Namespaced", "names": {"plural": plural, "kind": kind},
                 "versions": [{"name": version, "served": true, "storage": true}]}}),
    )
    .await
    .unwrap();
}

async fn ns(c: &Local, name: &str) {
    c.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        .await
        .unwrap();
}

async fn set_status(c: &Local, mut o: Value, status: Value) -> Value {
    o["status"] = status;
    c.replace_status(o).await.unwrap()
}

fn ready(generation: i64, status: &str, reason: &str, message: &str) -> Value {
    json!({"observedGeneration": generation, "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_check_reads_any_object_with_observed_generation() {
    let e = env().await;
    let c = Local(e.server.store.clone());
    let chk = check(
        "field: { cluster: infra, apiVersion: ceph.rook.io/v1, kind: CephCluster, namespace: rook-ceph, name: rook-ceph, field: status.ceph.health, equals: HEALTH_OK }",
    );
    let o = e.clusters.evaluate(&chk, Mode::Once).await.unwrap();
    assert!(!o.passed);
    crd(&c, "ceph.rook.io", "cephclusters", "CephCluster", "v1").await;
    ns(&c, "rook-ceph").await;
    let o = e.clusters.evaluate(&chk, Mode::Once).await.unwrap();
    assert_eq!(o.detail, "CephCluster rook-ceph/rook-ceph not found");
    let cc = c
        .create(json!({"apiVersion": "ceph.rook.io/v1", "kind": "CephCluster", "metadata": {"name": "rook-ceph", "namespace": "rook-ceph"}, "spec": {"mon": {"count": 3}}}))
        .await
        .unwrap();
    let cc = set_status(&c, cc, json!({"observedGeneration": 1, "phase": "Ready", "message": "Cluster created successfully", "ceph": {"health": "HEALTH_WARN"}})).await;
    let o = e.clusters.evaluate(&chk, Mode::Once).await.unwrap();
    assert!(!o.passed);
    assert!(
        o.detail
            .contains(".status.ceph.health is \"HEALTH_WARN\" (want \"HEALTH_OK\")"),
        "{}",
        o.detail
    );
    // The right value for an old generation is not enough.
    let mut spec_change = cc.clone();
    spec_change["spec"]["mon"]["count"] = json!(5);
    let cc = c.replace(spec_change).await.unwrap();
    let cc = set_status(
        &c,
        cc,
        json!({"observedGeneration": 1, "ceph": {"health": "HEALTH_OK"}}),
    )
    .await;
    let o = e.clusters.evaluate(&chk, Mode::Once).await.unwrap();
    assert!(
        o.detail
            .contains("observedGeneration 1 is behind generation 2"),
        "{}",
        o.detail
    );
    // Watch: it passes once the operator catches up.
    let store = e.server.store.clone();
    let t = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c = Local(store);
        set_status(
            &c,
            cc,
            json!({"observedGeneration": 2, "ceph": {"health": "HEALTH_OK"}}),
        )
        .await;
    });
    let o = e
        .clusters
        .evaluate(&chk, Mode::Wait(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(o.passed, "{}", o.detail);
    t.await.unwrap();
    let one_of = check(
        "field: { cluster: infra, apiVersion: ceph.rook.io/v1, kind: CephCluster, namespace: rook-ceph, name: rook-ceph, field: status.ceph.health, one_of: [HEALTH_OK, HEALTH_WARN] }",
    );
    assert!(
        e.clusters
            .evaluate(&one_of, Mode::Once)
            .await
            .unwrap()
            .passed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomizations_report_the_root_cause_of_a_dependson_chain() {
    let e = env().await;
    let c = Local(e.server.store.clone());
    let chk = check(
        "kustomizations: { cluster: infra, names: [storage-operators, storage-clusters, backups], path: kubernetes/clusters/infra/storage.yaml }",
    );
    let o = e.clusters.evaluate(&chk, Mode::Once).await.unwrap();
    assert!(!o.passed);
    crd(
        &c,
        "kustomize.toolkit.fluxcd.io",
        "kustomizations",
        "Kustomization",
        "v1",
    )
    .await;
    ns(&c, "flux-system").await;
    let mk = |name: &str, dep: Option<&str>| {
        let mut o = json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": name, "namespace": "flux-system", "labels": {"bootstrap.dev/phase": "storage"}}, "spec": {"path": "./x"}});
        if let Some(d) = dep {
            o["spec"]["dependsOn"] = json!([{"name": d}]);
        }
        o
    };
    let ops = c.create(mk("storage-operators", None)).await.unwrap();
    let o = e.clusters.evaluate(&chk, Mode::Once).await.unwrap();
    assert!(!o.passed);
    assert!(
        o.detail
            .contains("flux-system/storage-clusters, flux-system/backups not found in the cluster"),
        "{}",
        o.detail
    );
    assert!(
        o.detail.contains("kubernetes/clusters/infra/storage.yaml"),
        "{}",
        o.detail
    );
    let clusters = c
        .create(mk("storage-clusters", Some("storage-operators")))
        .await
        .unwrap();
    let backups = c
        .create(mk("backups", Some("storage-clusters")))
        .await
        .unwrap();
    let ops = set_status(
        &c,
        ops,
        ready(
            1,
            "False",
            "HealthCheckFailed",
            "health check failed after 5m0s: HelmRelease/rook-ceph/rook-ceph status: 'Failed'",
        ),
    )
    .await;
    set_status(
        &c,
        clusters,
        ready(
            1,
            "False",
            "DependencyNotReady",
            "dependency 'flux-system/storage-operators' is not ready",
        ),
    )
    .await;
    set_status(
        &c,
        backups,
        ready(
            1,
            "False",
            "DependencyNotReady",
            "dependency 'flux-system/storage-clusters' is not ready",
        ),
    )
    .await;
    let only_last = check("kustomizations: { cluster: infra, names: [backups] }");
    let o = e.clusters.evaluate(&only_last, Mode::Once).await.unwrap();
    assert!(!o.passed);
    assert!(
        o.detail.contains("root cause: Kustomization flux-system/storage-operators: Ready=False (HealthCheckFailed): health check failed"),
        "{}",
        o.detail
    );
    assert!(
        o.detail.contains(
            "flux-system/backups → flux-system/storage-clusters → flux-system/storage-operators"
        ),
        "{}",
        o.detail
    );
    // Existence alone is satisfied.
    let exist = check(
        "kustomizations: { cluster: infra, selector: bootstrap.dev/phase=storage, ready: false }",
    );
    let o = e.clusters.evaluate(&exist, Mode::Once).await.unwrap();
    assert!(o.passed, "{}", o.detail);
    assert!(
        o.detail.starts_with("3 Kustomizations exist"),
        "{}",
        o.detail
    );
    // Everything Ready: the selector form passes, by watch.
    let store = e.server.store.clone();
    let t = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c = Local(store);
        set_status(
            &c,
            ops,
            ready(
                1,
                "True",
                "ReconciliationSucceeded",
                "Applied revision: main@sha1:1",
            ),
        )
        .await;
        for n in ["storage-clusters", "backups"] {
            let o = c
                .get(
                    "kustomize.toolkit.fluxcd.io/v1",
                    "Kustomization",
                    Some("flux-system"),
                    n,
                )
                .await
                .unwrap()
                .unwrap();
            set_status(
                &c,
                o,
                ready(
                    1,
                    "True",
                    "ReconciliationSucceeded",
                    "Applied revision: main@sha1:1",
                ),
            )
            .await;
        }
    });
    let sel = check("kustomizations: { cluster: infra, selector: bootstrap.dev/phase=storage }");
    let o = e
        .clusters
        .evaluate(&sel, Mode::Wait(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(o.passed, "{}", o.detail);
    assert!(
        o.detail.starts_with("3/3 Kustomizations Ready"),
        "{}",
        o.detail
    );
    t.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helmreleases_and_their_effective_values() {
    let e = env().await;
    let c = Local(e.server.store.clone());
    crd(
        &c,
        "helm.toolkit.fluxcd.io",
        "helmreleases",
        "HelmRelease",
        "v2",
    )
    .await;
    let hr = c
        .create(json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "cilium", "namespace": "kube-system"},
            "spec": {"chart": {"spec": {"chart": "cilium", "version": "1.18.4"}},
                     "valuesFrom": [{"kind": "ConfigMap", "name": "cilium-values"}],
                     "values": {"k8sServiceHost": "10.25.11.11", "hubble": {"ui": {"enabled": true}}}}}))
        .await
        .unwrap();
    set_status(&c, hr, ready(1, "False", "InstallFailed", "Helm install failed for release kube-system/cilium with chart cilium@1.18.4: execution error")).await;
    let chk = check("helmreleases: { cluster: infra, names: [kube-system/cilium] }");
    let o = e.clusters.evaluate(&chk, Mode::Once).await.unwrap();
    assert!(!o.passed);
    assert!(o.detail.contains("root cause: HelmRelease kube-system/cilium: Ready=False (InstallFailed): Helm install failed"), "{}", o.detail);
    // The values: a missing valuesFrom source is an error naming it.
    let err = e
        .clusters
        .helmrelease_values("infra", "kube-system", "cilium")
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("ConfigMap kube-system/cilium-values"),
        "{err:#}"
    );
    c.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cilium-values", "namespace": "kube-system"},
        "data": {"values.yaml": "k8sServiceHost: localhost\nk8sServicePort: 7445\nhubble:\n  relay:\n    enabled: true\n"}}))
        .await
        .unwrap();
    let v = e
        .clusters
        .helmrelease_values("infra", "kube-system", "cilium")
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"k8sServiceHost": "10.25.11.11", "k8sServicePort": 7445, "hubble": {"relay": {"enabled": true}, "ui": {"enabled": true}}})
    );
}
