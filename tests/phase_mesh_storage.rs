//! Weeks 3 and 4 on the lab, through the real binary: `run --phase mesh` and `--phase storage`
//! pass after the foundation and a re-run runs nothing; the Cilium hand-off gate passes with the
//! values kept once and fails by key when the GitOps values drift; each gate item fails, naming its
//! cause, under the lab's faults or an edited GitOps tree; `plan`/`lint` on the homelab plan.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{bin, text};

/// Two labs at once at most: each runs two simulated clusters, and the machine has two cores.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
static SLOTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Hold one of two lab slots for the whole test.
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
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn run(args: &[&str], state: &Path, phases: Option<&Path>, faults: Option<&str>) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("BOOTSTRAP_STATE_DIR", state)
        .env_remove("BOOTSTRAP_PLAN")
        .env_remove("BOOTSTRAP_LAB_FAULTS")
        .env("NO_COLOR", "1")
        .env("CI", "true")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if let Some(p) = phases {
        cmd.arg("--phases").arg(p);
    }
    if let Some(f) = faults {
        cmd.env("BOOTSTRAP_LAB_FAULTS", f);
    }
    cmd.output().expect("run bootstrap")
}

fn all(o: &Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

fn ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "{}", all(o));
}

/// The phases with every gate item's timeout cut to a few seconds (failing items would otherwise
/// wait minutes), and `edits` applied.
fn fast_phases(dir: &Path, edits: &[(&str, &str, &str)]) -> PathBuf {
    let out = dir.join("phases");
    std::fs::create_dir_all(&out).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("phases");
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let mut t = std::fs::read_to_string(e.path()).unwrap();
        for (file, from, to) in edits {
            if *file == name {
                assert!(t.contains(from), "edit {from:?} applies to {name}");
                t = t.replace(from, to);
            }
        }
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

#[test]
fn mesh_and_storage_pass_after_the_foundation_and_a_rerun_runs_nothing() {
    let _slot = slot();
    let st = tempfile::tempdir().unwrap();
    let o = run(&["run", "--phase", "foundation"], st.path(), None, None);
    ok(&o);
    // The hand-off gate held: the bootstrap install and the HelmRelease share one values file.
    assert!(all(&o).contains("✔ cilium-handoff/infra"), "{}", all(&o));
    assert!(all(&o).contains("✔ flux-synced/apps"), "{}", all(&o));

    let o = run(&["run", "--phase", "mesh"], st.path(), None, None);
    ok(&o);
    let out = all(&o);
    for item in [
        "✔ clustermesh-connected/infra",
        "✔ clustermesh-connected/apps",
        "✔ global-service-backends",
        "✔ jaeger-otlp-grpc",
        "✔ cilium-values-in-sync/apps",
        "gate   mesh: passed",
    ] {
        assert!(out.contains(item), "{item} in:\n{out}");
    }
    // Manual items are listed as manual, never ticked.
    assert!(
        out.contains("☐ jaeger-ui (manual): kubectl --context admin@infra"),
        "{out}"
    );
    let path = out
        .lines()
        .find_map(|l| l.rsplit_once("report: ").map(|(_, p)| p.trim().to_string()))
        .expect("the run names its report");
    let report = std::fs::read_to_string(path).unwrap();
    assert!(report.contains("- [ ] `traces` (manual)"), "{report}");
    assert!(
        report.contains("- [x] `clustermesh-connected/infra`"),
        "{report}"
    );

    // The CA was created once, in 1Password.
    let o = run(&["run", "--phase", "storage"], st.path(), None, None);
    ok(&o);
    let out = all(&o);
    assert!(out.contains("✔ ceph-health/infra"), "{out}");
    assert!(out.contains("gate   storage: passed"), "{out}");

    // A re-run of everything does nothing: not one step starts.
    let o = run(
        &["run", "--phase", "storage", "--output", "json"],
        st.path(),
        None,
        None,
    );
    ok(&o);
    let events: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // Gates are re-checked on every run (they are read-only); no step runs.
    let started: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "step-started")
        .filter(|e| !e["id"].as_str().unwrap_or("").starts_with("gate/"))
        .collect();
    assert!(started.is_empty(), "{started:?}");
    // Either every step is reported skipped as done, or the run says there is nothing to do
    // (after asking the gates, read-only).
    let skipped = events
        .iter()
        .filter(|e| e["event"] == "step-skipped")
        .count();
    let nothing = events
        .iter()
        .find(|e| e["event"] == "nothing-to-do")
        .and_then(|e| e["steps"].as_u64())
        .unwrap_or(0);
    assert!(skipped > 40 || nothing > 40, "{}", text(&o.stdout));
}

#[test]
fn the_handoff_gate_names_each_value_the_gitops_tree_changes() {
    let _slot = slot();
    let st = tempfile::tempdir().unwrap();
    // The seed's own drift: a second k8sServiceHost, written inline in the infra HelmRelease only.
    gitops_file(
        st.path(),
        "kubernetes/infrastructure/infra/cilium/helmrelease.yaml",
        |t| {
            format!(
                "{t}  values:\n    k8sServiceHost: 10.25.11.11\n    hubble:\n      ui:\n        enabled: false\n"
            )
        },
    );
    let phases = fast_phases(st.path(), &[]);
    let o = run(
        &["run", "--phase", "foundation"],
        st.path(),
        Some(&phases),
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    let out = all(&o);
    assert!(out.contains("✗ cilium-handoff/infra"), "{out}");
    assert!(
        out.contains("k8sServiceHost: deployed \"localhost\", HelmRelease \"10.25.11.11\""),
        "{out}"
    );
    assert!(
        out.contains("hubble.ui.enabled: deployed true, HelmRelease false"),
        "{out}"
    );
    // The other cluster's values were not edited: its hand-off holds.
    assert!(out.contains("✔ cilium-handoff/apps"), "{out}");
}

#[test]
fn storage_gate_items_fail_naming_their_cause() {
    let _slot = slot();
    let st = tempfile::tempdir().unwrap();
    let faults = r#"[
        {"id": "ceph", "kind": "ceph-health-warn", "cluster": "infra"},
        {"id": "velero", "kind": "helmrelease-fails", "cluster": "infra", "namespace": "velero", "name": "velero",
         "message": "execution error at (velero/templates/deployment.yaml:42:18): an init container with a plugin is required"},
        {"id": "clusters", "kind": "kustomization-fails", "cluster": "apps", "name": "storage-clusters",
         "message": "kustomize build failed: accumulating resources: open kubernetes/storage/clusters/missing.yaml: no such file or directory"}
    ]"#;
    // A namespace created the seed's way: no Pod Security label.
    gitops_file(
        st.path(),
        "kubernetes/storage/operators/rook-ceph.yaml",
        |t| {
            t.replace(
                "  labels:\n    pod-security.kubernetes.io/enforce: privileged\n",
                "",
            )
        },
    );
    let phases = fast_phases(st.path(), &[]);
    ok(&run(
        &["run", "--phase", "foundation"],
        st.path(),
        Some(&phases),
        Some(faults),
    ));
    let o = run(
        &["run", "--phase", "storage"],
        st.path(),
        Some(&phases),
        Some(faults),
    );
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    let out = all(&o);
    let expect = [
        // Ceph stuck in HEALTH_WARN, with Ceph's reason.
        "✗ ceph-health/infra: timed out after 6s: CephCluster rook-ceph/rook-ceph: .status.ceph.health is \"HEALTH_WARN\" (want \"HEALTH_OK\"); status.ceph.details: TOO_FEW_OSDS: OSD count 2 < osd_pool_default_size 3",
        // A HelmRelease failing its install with a chart error, named from the Kustomization…
        "✗ storage-kustomizations/infra: timed out after 6s: 2/3 Kustomizations Ready; root cause: Kustomization flux-system/backups: Ready=False (HealthCheckFailed): health check failed after 0s: failed early due to stalled resources: [HelmRelease/velero/velero status: 'Failed']",
        // …and from the HelmRelease itself.
        "✗ storage-helmreleases/infra: timed out after 6s: 3/4 HelmReleases Ready; root cause: HelmRelease velero/velero: Ready=False (InstallFailed): Helm install failed for release velero/velero with chart velero@11.1.1: execution error at (velero/templates/deployment.yaml:42:18)",
        "✗ velero/infra: timed out after 6s: deployments.apps \"velero\" not found in velero",
        // A Kustomization whose dependency is not Ready: the root cause, not the dependent.
        "✗ storage-kustomizations/apps: timed out after 6s: 1/3 Kustomizations Ready; root cause: Kustomization flux-system/storage-clusters: Ready=False (BuildFailed): kustomize build failed",
        "also not Ready: flux-system/backups (Ready=False (DependencyNotReady): dependency 'flux-system/storage-clusters' is not ready)",
        "✗ ceph-health/apps: timed out after 6s: CephCluster rook-ceph/rook-ceph not found",
        "✗ storageclass-ceph-block/apps: timed out after 6s: StorageClass ceph-block not found",
        // The seed's plain namespace.
        "✗ rook-namespace-privileged/infra: timed out after 6s: Namespace rook-ceph exists but lacks label pod-security.kubernetes.io/enforce=privileged (has none)",
    ];
    for e in expect {
        assert!(out.contains(e), "missing {e:?} in:\n{out}");
    }
    // What was not broken still passes.
    assert!(out.contains("✔ openebs-provisioner/infra"), "{out}");
    assert!(
        out.contains("✔ ceph-health/") || out.contains("✔ storageclass-openebs-hostpath/apps"),
        "{out}"
    );
}

#[test]
fn mesh_gate_items_fail_naming_their_cause() {
    let _slot = slot();
    let st = tempfile::tempdir().unwrap();
    let faults = r#"[{"id": "mesh", "kind": "mesh-never-connects"}]"#;
    // The seed's Jaeger: chart 3.x (Jaeger v1), whose Services are jaeger-collector/jaeger-query.
    gitops_file(st.path(), "kubernetes/observability/jaeger.yaml", |t| {
        t.replace("version: 4.11.1", "version: 3.4.1")
    });
    let phases = fast_phases(
        st.path(),
        &[("02-mesh.yaml", "--wait-duration, 3m", "--wait-duration, 1s")],
    );
    ok(&run(
        &["run", "--phase", "foundation"],
        st.path(),
        Some(&phases),
        Some(faults),
    ));
    let o = run(
        &["run", "--phase", "mesh"],
        st.path(),
        Some(&phases),
        Some(faults),
    );
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    let out = all(&o);
    for e in [
        "✗ clustermesh-connected/infra: ",
        "exit code 1: ❌ cilium-infra is not connected to cluster apps: remote cluster configuration required but not found | Error: Unable to determine status:  timeout while waiting for condition",
        "✗ global-service-backends: timed out after 6s: EndpointSlice mesh-test/echo-infra not found",
        "✗ jaeger-otlp-grpc: timed out after 6s: Service observability/jaeger not found",
    ] {
        assert!(out.contains(e), "missing {e:?} in:\n{out}");
    }
    // The shared CA was still created once and handed to both clusters.
    assert!(out.contains("✔ mesh-ca-present/apps"), "{out}");
    assert!(out.contains("✔ jaeger-running"), "{out}");
}

#[test]
fn homelab_plan_renders_weeks_one_to_four_with_gates_and_manual_items_and_lints_clean() {
    let st = tempfile::tempdir().unwrap();
    let o = run(
        &["lint", "--plan", "plans/homelab.yaml"],
        st.path(),
        None,
        None,
    );
    ok(&o);
    let o = run(
        &["plan", "--plan", "plans/homelab.yaml", "--format", "json"],
        st.path(),
        None,
        None,
    );
    ok(&o);
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).expect("plan JSON");
    let phases: Vec<&str> = plan["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "foundation",
            "mesh",
            "storage",
            "platform",
            "security",
            "apps"
        ]
    );
    let gate = |id: &str| -> Vec<serde_json::Value> {
        plan["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap()["gate"]
            .as_array()
            .unwrap()
            .clone()
    };
    let mesh = gate("mesh");
    let manual: Vec<&str> = mesh
        .iter()
        .filter(|i| i["check"]["manual"].is_string())
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(
        manual.contains(&"jaeger-ui") && manual.contains(&"traces"),
        "{manual:?}"
    );
    assert!(mesh.iter().any(|i| i["id"] == "clustermesh-connected/apps"));
    let storage = gate("storage");
    assert!(
        storage.iter().any(|i| i["id"] == "ceph-health/infra"
            && i["check"]["field"]["field"] == "status.ceph.health")
    );
    assert!(
        gate("foundation")
            .iter()
            .any(|i| i["id"] == "cilium-handoff/apps")
    );
    // The text view shows the manual items as such.
    let o = run(
        &["plan", "--plan", "plans/homelab.yaml"],
        st.path(),
        None,
        None,
    );
    ok(&o);
    let t = text(&o.stdout);
    assert!(
        t.contains(
            "[manual] kubectl --context admin@infra -n observability port-forward svc/jaeger 16686"
        ),
        "{t}"
    );
    assert!(t.contains("gate/storage"), "{t}");
}

#[test]
fn the_lab_keeps_velero_unavailable_without_its_bucket_and_the_mesh_apart_without_a_shared_ca() {
    let _slot = slot();
    let st = tempfile::tempdir().unwrap();
    let phases = fast_phases(st.path(), &[]);
    // Only the foundation, then a probe of what the lab shows before weeks 3 and 4 act.
    for f in [
        "02-mesh.yaml",
        "03-storage.yaml",
        "04-platform.yaml",
        "05-security.yaml",
        "06-apps.yaml",
    ] {
        std::fs::remove_file(phases.join(f)).unwrap();
    }
    std::fs::write(
        phases.join("09-probe.yaml"),
        r#"
id: probe
title: Probe
steps: []
gate:
  - id: bsl-unavailable
    text: BSL unavailable
    check: { field: { cluster: infra, apiVersion: velero.io/v1, kind: BackupStorageLocation, namespace: velero, name: default, field: status.phase, equals: Unavailable } }
    timeout: 20s
  - id: bsl-available
    text: BSL available
    check: { field: { cluster: infra, apiVersion: velero.io/v1, kind: BackupStorageLocation, namespace: velero, name: default, field: status.phase, equals: Available } }
    timeout: 3s
  - id: mesh-apart
    text: not connected
    check: { json: { cmd: [cilium, clustermesh, status, --context, admin@infra, -o, json], field: connectivity.clusters.apps.connected, equals: "0" } }
    timeout: 20s
  - id: mesh-connected
    text: connected
    check: { json: { cmd: [cilium, clustermesh, status, --context, admin@infra, --wait, --wait-duration, 1s, -o, json], field: connectivity.clusters.apps.connected, equals: "3" } }
    timeout: 3s
"#,
    )
    .unwrap();
    let o = run(&["run", "--phase", "probe"], st.path(), Some(&phases), None);
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    let out = all(&o);
    for e in [
        "✔ bsl-unavailable",
        "✗ bsl-available: timed out after 3s: BackupStorageLocation velero/default: .status.phase is \"Unavailable\" (want \"Available\"); status.message: BackupStorageLocation \"default\" is unavailable: unable to get credentials: secrets \"velero-s3-credentials\" not found",
        "✔ mesh-apart",
        "✗ mesh-connected: timed out after 3s; the last complete attempt: `cilium clustermesh status --context admin@infra --wait --wait-duration 1s -o json` failed: exit code 1: ❌ cilium-infra is not connected to cluster apps: tls: failed to verify certificate: x509: certificate signed by unknown authority",
    ] {
        assert!(out.contains(e), "missing {e:?} in:\n{out}");
    }
}
