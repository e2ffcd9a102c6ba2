//! Cluster Mesh in the lab: connect validates names and ids, connects only when both sides are
//! enabled, never connects under the fault, and a global service gets the remote backends.

#[path = "common/lab.rs"]
mod lab;

use lab::{TestLab, err, out};

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
            "--wait",
            "--timeout",
            "30s",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
}

fn create_namespace(l: &TestLab, cluster: &str) {
    let k = |args: &[&str]| {
        l.tool(
            "kubectl",
            &[&["--context", &format!("admin@{cluster}")][..], args].concat(),
        )
    };
    assert_eq!(
        k(&["create", "namespace", "databases"]).status.code(),
        Some(0)
    );
}

#[test]
fn clusters_connect_and_a_global_service_is_reachable_from_the_other_cluster() {
    let l = TestLab::start(None);
    l.talos_up("infra");
    l.talos_up("apps");
    install_cilium(&l, "infra", 1);
    install_cilium(&l, "apps", 2);
    let before = l.tool(
        "cilium",
        &["clustermesh", "status", "--context", "admin@apps"],
    );
    assert_eq!(before.status.code(), Some(0));
    assert!(
        out(&before).contains("🔌 No cluster connected"),
        "{}",
        out(&before)
    );
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
    assert!(
        out(&conn).ends_with("✅ Connected cluster infra <=> apps!\n"),
        "{}",
        out(&conn)
    );
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
    assert!(
        out(&st).contains("✅ All 3 nodes are connected to all clusters"),
        "{}",
        out(&st)
    );
    assert!(
        out(&st).contains("  - infra: 3/3 configured, 3/3 connected"),
        "{}",
        out(&st)
    );

    // postgres-rw in `databases`, marked global on both sides (current annotation on infra, the
    // legacy alias on apps): apps gets infra's backends.
    for (cluster, key) in [
        ("infra", "service.cilium.io/global"),
        ("apps", "io.cilium/global-service"),
    ] {
        create_namespace(&l, cluster);
        let created = l.rt.block_on(async {
            use bootstrap_lab::cluster::Objects;
            let r = bootstrap_lab::cluster::Remote(bootstrap_lab::cluster::client(&l.kubeconfig(), Some(&format!("admin@{cluster}"))).await.unwrap());
            r.create(serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "postgres-rw", "namespace": "databases", "annotations": {key: "true"}}, "spec": {"ports": [{"port": 5432, "protocol": "TCP"}]}})).await
        });
        assert!(created.is_ok(), "{created:?}");
    }
    let mut found = String::new();
    for _ in 0..100 {
        let o = l.tool(
            "kubectl",
            &[
                "--context",
                "admin@apps",
                "get",
                "endpointslices",
                "postgres-rw-infra",
                "-n",
                "databases",
                "-o",
                "json",
            ],
        );
        if o.status.success() {
            found = out(&o);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let v: serde_json::Value = serde_json::from_str(&found)
        .unwrap_or_else(|_| panic!("apps never got infra's backends: {found}"));
    assert_eq!(
        v["metadata"]["labels"]["kubernetes.io/service-name"],
        "postgres-rw"
    );
    assert_eq!(v["endpoints"].as_array().unwrap().len(), 3);
    assert_eq!(v["endpoints"][0]["addresses"][0], "10.25.11.11");
}

#[test]
fn connect_refuses_clusters_with_the_same_id_and_needs_clustermesh_enabled() {
    let l = TestLab::start(None);
    l.talos_up("infra");
    l.talos_up("apps");
    install_cilium(&l, "infra", 1);
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
            "admin@apps",
            "--set",
            "cluster.name=apps",
            "--set",
            "cluster.id=1",
            "--wait",
            "--timeout",
            "30s",
        ],
    );
    assert_eq!(o.status.code(), Some(0));
    let no_mesh = l.tool(
        "cilium",
        &[
            "clustermesh",
            "connect",
            "--context",
            "admin@infra",
            "--destination-context",
            "admin@apps",
        ],
    );
    assert_eq!(no_mesh.status.code(), Some(1));
    assert!(out(&no_mesh).contains("❌ Unable to retrieve access information of cluster \"apps\": unable to get clustermesh service \"clustermesh-apiserver\""), "{}", out(&no_mesh));
    let enable = l.tool(
        "cilium",
        &["clustermesh", "enable", "--context", "admin@apps"],
    );
    assert_eq!((enable.status.code(), err(&enable)), (Some(1), "\nError: Unable to enable ClusterMesh: cannot auto-detect service type, please specify using '--service-type' option\n".to_string()));
    assert_eq!(
        l.tool(
            "cilium",
            &[
                "clustermesh",
                "enable",
                "--service-type",
                "NodePort",
                "--context",
                "admin@apps"
            ]
        )
        .status
        .code(),
        Some(0)
    );
    let same = l.tool(
        "cilium",
        &[
            "clustermesh",
            "connect",
            "--context",
            "admin@infra",
            "--destination-context",
            "admin@apps",
        ],
    );
    assert_eq!(same.status.code(), Some(1));
    assert_eq!(
        err(&same),
        "\nError: Unable to connect cluster: remote and local cluster have the same, non-unique ID: 1\n"
    );
}

#[test]
fn the_mesh_never_connects_under_the_fault() {
    let l = TestLab::start(Some(r#"[{"id": "mesh", "kind": "mesh-never-connects"}]"#));
    l.talos_up("infra");
    l.talos_up("apps");
    install_cilium(&l, "infra", 1);
    install_cilium(&l, "apps", 2);
    assert_eq!(
        l.tool(
            "cilium",
            &[
                "clustermesh",
                "connect",
                "--context",
                "admin@apps",
                "--destination-context",
                "admin@infra"
            ]
        )
        .status
        .code(),
        Some(0)
    );
    // Without --wait, status exits 0 even when not connected (facts §2.5); with it, it times out.
    let once = l.tool(
        "cilium",
        &["clustermesh", "status", "--context", "admin@apps"],
    );
    assert_eq!(once.status.code(), Some(0));
    assert!(out(&once).contains("❌ 1 Errors:"), "{}", out(&once));
    let waited = l.tool(
        "cilium",
        &[
            "clustermesh",
            "status",
            "--wait",
            "--wait-duration",
            "1s",
            "--context",
            "admin@apps",
        ],
    );
    assert_eq!(waited.status.code(), Some(1));
    assert_eq!(
        err(&waited),
        "\nError: Unable to determine status:  timeout while waiting for condition, last error: 3 nodes are not ready\n"
    );
}
