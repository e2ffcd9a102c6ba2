//! Issue 7, "Trustworthy runs": each defect found by crashing and signalling real runs has a test
//! here that failed before its fix.

mod common;
#[path = "common/lab.rs"]
mod lab;
#[path = "common/ws.rs"]
mod ws;

use std::time::{Duration, Instant};

use serde_json::json;

use bootstrap::lab::apiserver::Store;
use lab::{TestLab, err, out};

/// Defect 1: the lab's API server persisted every 300 ms, so a kill lost writes it had
/// acknowledged. Every change is now logged before it is acknowledged.
#[test]
fn lab_api_server_never_loses_an_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("objects.json");
    let s = Store::new(Some(path.clone()));
    let cm = s.find_kind("v1", "ConfigMap").unwrap();
    let ns = s.find_kind("v1", "Namespace").unwrap();
    let obj = |name: &str, v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": v}});
    s.create(&cm, Some("default"), obj("snapshotted", "1"), false)
        .unwrap();
    s.flush();
    // Acknowledged after the last snapshot; the process then dies without flushing.
    s.create(&cm, Some("default"), obj("late", "1"), false)
        .unwrap();
    let cur = s.get(&cm, Some("default"), "snapshotted").unwrap();
    let mut changed = cur.clone();
    changed["data"]["v"] = json!("2");
    s.update(&cm, Some("default"), "snapshotted", changed, false, false)
        .unwrap();
    s.create(
        &ns,
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gone"}}),
        false,
    )
    .unwrap();
    s.create(&cm, Some("gone"), obj("inside", "1"), false)
        .unwrap();
    s.delete(&ns, None, "gone", false).unwrap();
    let rv = s.current_rv();
    drop(s);

    let again = Store::new(Some(path));
    assert_eq!(again.current_rv(), rv, "resourceVersion continues");
    assert_eq!(
        again.get(&cm, Some("default"), "late").unwrap()["data"]["v"],
        "1"
    );
    assert_eq!(
        again.get(&cm, Some("default"), "snapshotted").unwrap()["data"]["v"],
        "2"
    );
    assert!(again.get(&ns, None, "gone").is_err());
    assert!(again.get(&cm, Some("gone"), "inside").is_err());
}

/// Defect 1: a bootstrapped cluster's configured nodes register again when their Node objects are
/// missing (a kill between `talosctl bootstrap` and the registration, or a lost write), as real
/// kubelets keep retrying registration.
#[test]
fn lab_kubelets_register_missing_nodes_of_a_bootstrapped_cluster() {
    let lab = TestLab::start(None);
    lab.talos_up("infra");
    let kc = lab.kubeconfig().display().to_string();
    let get = || {
        lab.tool(
            "kubectl",
            &[
                "--kubeconfig",
                &kc,
                "--context",
                "admin@infra",
                "get",
                "node",
                "infra-02",
                "-o",
                "name",
            ],
        )
    };
    assert!(get().status.success(), "{}", err(&get()));
    let del = lab.tool(
        "kubectl",
        &[
            "--kubeconfig",
            &kc,
            "--context",
            "admin@infra",
            "delete",
            "node",
            "infra-02",
        ],
    );
    assert!(del.status.success(), "{}", err(&del));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = get();
        if o.status.success() {
            assert_eq!(out(&o).trim(), "node/infra-02");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "infra-02 was never registered again: {}",
            err(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
