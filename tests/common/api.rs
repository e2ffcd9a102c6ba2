//! One lab API server for a test, and the plan's clusters pointed at it: the built-in checks are
//! exercised with the kube client over real HTTP.
#![allow(dead_code)]

use bootstrap::checks::Clusters;
use bootstrap::spec::phase::ActionSpec;
use bootstrap_lab::apiserver::{self, ServeOptions};
use bootstrap_lab::cluster::Local;

pub fn check(yaml: &str) -> ActionSpec {
    serde_saphyr::from_str(yaml).expect("check YAML")
}

pub struct Env {
    pub server: apiserver::ApiServer,
    pub clusters: Clusters,
    _tmp: tempfile::TempDir,
}

/// A server for cluster `infra`, with a kubeconfig naming it `admin@infra`.
pub async fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let server = apiserver::serve(ServeOptions {
        cluster: "infra".into(),
        persist: None,
        port: None,
        lab: None,
    })
    .await
    .unwrap();
    let kc = tmp.path().join("kubeconfig");
    apiserver::kubeconfig::write_kubeconfig(
        &kc,
        &[("admin@infra".into(), "infra".into(), server.url())],
        None,
    )
    .unwrap();
    let (plan, _) = bootstrap::spec::load_plan(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/plans/lab.yaml"
    )))
    .unwrap();
    Env {
        clusters: Clusters::new(&plan, kc),
        server,
        _tmp: tmp,
    }
}

/// In-process access to the server's store (to set up objects and their status).
pub fn local(e: &Env) -> Local {
    Local(e.server.store.clone())
}
