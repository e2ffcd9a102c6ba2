//! One way to read and write a lab cluster's objects, whether in-process (the simulated controllers,
//! straight on the store) or from a stand-in process (over HTTP with the kube client, as real tools do).

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::apiserver::Store;
use crate::Result;

/// Objects by apiVersion and kind, as JSON.
#[allow(async_fn_in_trait)]
pub trait Objects {
    async fn get(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>>;
    async fn list(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        labels: Option<&str>,
    ) -> Result<Vec<Value>>;
    async fn create(&self, obj: Value) -> Result<Value>;
    async fn replace(&self, obj: Value) -> Result<Value>;
    async fn replace_status(&self, obj: Value) -> Result<Value>;
    async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Result<()>;

    /// Create, or replace keeping the server's status. A write that loses a race with a controller
    /// (409 Conflict, or AlreadyExists after a concurrent create) reads again and retries, as
    /// helm's and kubectl's patches effectively do: they carry no resourceVersion.
    async fn apply(&self, obj: Value) -> Result<Value> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.apply_once(obj.clone()).await {
                Err(e)
                    if tries < 8 && {
                        let m = format!("{e:#}");
                        m.contains("the object has been modified") || m.contains("already exists")
                    } =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * tries)).await;
                }
                other => return other,
            }
        }
    }

    async fn apply_once(&self, mut obj: Value) -> Result<Value> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let ns = obj["metadata"]["namespace"].as_str().map(String::from);
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match self.get(&api_version, &kind, ns.as_deref(), &name).await? {
            None => self.create(obj).await,
            Some(cur) => {
                obj["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
                if let Some(s) = cur.get("status") {
                    obj["status"] = s.clone();
                }
                self.replace(obj).await
            }
        }
    }
}

/// In-process access to a store.
pub struct Local(pub Store);

fn api_err(e: super::apiserver::ApiError) -> color_eyre::Report {
    color_eyre::eyre::eyre!("{}", e.message)
}

impl Local {
    fn res(&self, api_version: &str, kind: &str) -> Result<super::apiserver::Resource> {
        self.0.find_kind(api_version, kind).ok_or_else(|| {
            color_eyre::eyre::eyre!(
                "the server doesn't have a resource type for {kind} ({api_version})"
            )
        })
    }
}

impl Objects for Local {
    async fn get(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>> {
        let Ok(res) = self.res(api_version, kind) else {
            return Ok(None);
        };
        Ok(self.0.get(&res, ns, name).ok())
    }
    async fn list(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        labels: Option<&str>,
    ) -> Result<Vec<Value>> {
        let Ok(res) = self.res(api_version, kind) else {
            return Ok(Vec::new());
        };
        let empty = serde_json::Map::new();
        Ok(self
            .0
            .list(&res, ns)
            .0
            .into_iter()
            .filter(|o| {
                labels.is_none_or(|l| {
                    super::apiserver::labels_match(
                        l,
                        o["metadata"]["labels"].as_object().unwrap_or(&empty),
                    )
                })
            })
            .collect())
    }
    async fn create(&self, obj: Value) -> Result<Value> {
        let res = self.res(
            obj["apiVersion"].as_str().unwrap_or(""),
            obj["kind"].as_str().unwrap_or(""),
        )?;
        let ns = obj["metadata"]["namespace"].as_str().map(String::from);
        self.0
            .create(&res, ns.as_deref(), obj, false)
            .map_err(api_err)
    }
    async fn replace(&self, obj: Value) -> Result<Value> {
        let res = self.res(
            obj["apiVersion"].as_str().unwrap_or(""),
            obj["kind"].as_str().unwrap_or(""),
        )?;
        let ns = obj["metadata"]["namespace"].as_str().map(String::from);
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        self.0
            .update(&res, ns.as_deref(), &name, obj, false, false)
            .map_err(api_err)
    }
    async fn replace_status(&self, obj: Value) -> Result<Value> {
        let res = self.res(
            obj["apiVersion"].as_str().unwrap_or(""),
            obj["kind"].as_str().unwrap_or(""),
        )?;
        let ns = obj["metadata"]["namespace"].as_str().map(String::from);
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        self.0
            .update(&res, ns.as_deref(), &name, obj, res.status, false)
            .map_err(api_err)
    }
    async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Result<()> {
        let res = self.res(api_version, kind)?;
        match self.0.delete(&res, ns, name, false) {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(api_err(e)),
        }
    }
}

/// Over HTTP with the kube client.
pub struct Remote(pub kube::Client);

fn gvk(api_version: &str, kind: &str) -> ApiResource {
    let (g, v) = api_version.split_once('/').unwrap_or(("", api_version));
    let mut ar = ApiResource::from_gvk(&GroupVersionKind::gvk(g, v, kind));
    if kind == "Endpoints" {
        ar.plural = "endpoints".into();
    }
    ar
}

impl Remote {
    /// The API of an object's kind and namespace, and its name.
    fn api_of(&self, obj: &Value) -> (Api<DynamicObject>, String) {
        let api = self.api(
            obj["apiVersion"].as_str().unwrap_or(""),
            obj["kind"].as_str().unwrap_or(""),
            obj["metadata"]["namespace"].as_str(),
        );
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        (api, name)
    }

    fn api(&self, api_version: &str, kind: &str, ns: Option<&str>) -> Api<DynamicObject> {
        let ar = gvk(api_version, kind);
        match ns {
            Some(ns) => Api::namespaced_with(self.0.clone(), ns, &ar),
            None => Api::all_with(self.0.clone(), &ar),
        }
    }
}

fn to_value(o: DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

fn from_value(v: &Value) -> Result<DynamicObject> {
    Ok(serde_json::from_value(v.clone())?)
}

impl Objects for Remote {
    async fn get(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>> {
        Ok(self
            .api(api_version, kind, ns)
            .get_opt(name)
            .await?
            .map(to_value))
    }
    async fn list(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        labels: Option<&str>,
    ) -> Result<Vec<Value>> {
        let mut lp = ListParams::default();
        if let Some(l) = labels {
            lp = lp.labels(l);
        }
        Ok(self
            .api(api_version, kind, ns)
            .list(&lp)
            .await?
            .items
            .into_iter()
            .map(to_value)
            .collect())
    }
    async fn create(&self, obj: Value) -> Result<Value> {
        let (api, _) = self.api_of(&obj);
        Ok(to_value(
            api.create(&PostParams::default(), &from_value(&obj)?)
                .await?,
        ))
    }
    async fn replace(&self, obj: Value) -> Result<Value> {
        let (api, name) = self.api_of(&obj);
        Ok(to_value(
            api.replace(&name, &PostParams::default(), &from_value(&obj)?)
                .await?,
        ))
    }
    async fn replace_status(&self, obj: Value) -> Result<Value> {
        let (api, name) = self.api_of(&obj);
        Ok(to_value(
            api.replace_status(&name, &PostParams::default(), &from_value(&obj)?)
                .await?,
        ))
    }
    async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Result<()> {
        match self
            .api(api_version, kind, ns)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A kube client for a kubeconfig file and context (what `--kubeconfig`/`--context` select).
pub async fn client(kubeconfig: &std::path::Path, context: Option<&str>) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let opts = kube::config::KubeConfigOptions {
        context: context.map(String::from),
        ..Default::default()
    };
    let cfg = kube::Config::from_custom_kubeconfig(kc, &opts).await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// kubectl's rollout rules for a Deployment or DaemonSet (facts §7.2/7.3).
pub fn workload_ready(o: &Value) -> bool {
    let generation = o["metadata"]["generation"].as_i64().unwrap_or(1);
    let observed = o["status"]["observedGeneration"].as_i64().unwrap_or(0);
    if observed < generation {
        return false;
    }
    match o["kind"].as_str() {
        Some("DaemonSet") => {
            let desired = o["status"]["desiredNumberScheduled"].as_i64().unwrap_or(0);
            desired > 0
                && o["status"]["updatedNumberScheduled"].as_i64().unwrap_or(0) >= desired
                && o["status"]["numberAvailable"].as_i64().unwrap_or(0) >= desired
        }
        _ => {
            let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
            let updated = o["status"]["updatedReplicas"].as_i64().unwrap_or(0);
            updated >= want
                && o["status"]["replicas"].as_i64().unwrap_or(0) <= updated
                && o["status"]["availableReplicas"].as_i64().unwrap_or(0) >= updated
        }
    }
}
