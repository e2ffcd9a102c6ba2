//! The API server's object store: every object of one cluster as JSON, with resourceVersion, uid,
//! generation and creationTimestamp maintained as a real server does, a change feed for watches, and
//! persistence to a JSON file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// A served resource type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Resource {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    /// Has a status subresource (status changes only through /status).
    pub status: bool,
    pub short_names: Vec<String>,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// `deployments.apps`, `namespaces`: the name used in error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    pub fn key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }
}

fn r(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    status: bool,
    short: &[&str],
) -> Resource {
    Resource {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        kind: kind.into(),
        namespaced,
        status,
        short_names: short.iter().map(|s| s.to_string()).collect(),
    }
}

/// The built-in resources every cluster serves.
pub fn builtin() -> Vec<Resource> {
    vec![
        r("", "v1", "namespaces", "Namespace", false, true, &["ns"]),
        r("", "v1", "nodes", "Node", false, true, &["no"]),
        r("", "v1", "pods", "Pod", true, true, &["po"]),
        r("", "v1", "services", "Service", true, true, &["svc"]),
        r("", "v1", "endpoints", "Endpoints", true, false, &["ep"]),
        r("", "v1", "configmaps", "ConfigMap", true, false, &["cm"]),
        r("", "v1", "secrets", "Secret", true, false, &[]),
        r(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            false,
            &["sa"],
        ),
        r("", "v1", "events", "Event", true, false, &["ev"]),
        r(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            true,
            &["deploy"],
        ),
        r("apps", "v1", "daemonsets", "DaemonSet", true, true, &["ds"]),
        r(
            "apps",
            "v1",
            "statefulsets",
            "StatefulSet",
            true,
            true,
            &["sts"],
        ),
        r(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            true,
            &["rs"],
        ),
        r(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            true,
            &["crd", "crds"],
        ),
        r(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            false,
            &[],
        ),
        r(
            "storage.k8s.io",
            "v1",
            "storageclasses",
            "StorageClass",
            false,
            false,
            &["sc"],
        ),
        r(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
            false,
            &[],
        ),
    ]
}

/// One change, for watches.
#[derive(Debug, Clone)]
pub struct Change {
    pub resource: String,
    pub kind: &'static str,
    pub object: Value,
}

#[derive(Default, Serialize, Deserialize)]
struct Persisted {
    resource_version: u64,
    /// resource key -> "ns/name" -> object
    objects: BTreeMap<String, BTreeMap<String, Value>>,
}

pub struct Inner {
    pub rv: u64,
    pub objects: BTreeMap<String, BTreeMap<String, Value>>,
    pub crds: Vec<Resource>,
    dirty: bool,
    /// The write-ahead log: every change is appended here before it is acknowledged, so a kill at
    /// any instant loses no acknowledged write (the snapshot is only a compaction of it).
    wal: Option<std::fs::File>,
}

/// One change in the write-ahead log: the object now stored under `res`/`key`, or none (deleted).
#[derive(Serialize, Deserialize)]
struct WalEntry {
    rv: u64,
    res: String,
    key: String,
    obj: Option<Value>,
}

impl Inner {
    /// Append a change to the log before it is applied and acknowledged.
    fn log(&mut self, res: &str, key: &str, obj: Option<&Value>) -> Result<(), ApiError> {
        let Some(f) = &mut self.wal else {
            return Ok(());
        };
        use std::io::Write;
        let entry = WalEntry {
            rv: self.rv,
            res: res.to_string(),
            key: key.to_string(),
            obj: obj.cloned(),
        };
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        f.write_all(&line).map_err(|e| {
            ApiError::new(
                500,
                "InternalError",
                format!("etcdserver: cannot persist the write: {e}"),
            )
        })
    }

    /// Apply one logged change (on replay, and as the write itself).
    fn apply(&mut self, res: &str, key: &str, obj: Option<Value>) {
        match obj {
            Some(o) => {
                self.objects
                    .entry(res.to_string())
                    .or_default()
                    .insert(key.to_string(), o);
            }
            None => {
                if let Some(m) = self.objects.get_mut(res) {
                    m.remove(key);
                }
                // Deleting a namespace deletes what is in it.
                if res == "/namespaces" {
                    let ns = key.trim_start_matches('/');
                    for m in self.objects.values_mut() {
                        m.retain(|_, o| o["metadata"]["namespace"].as_str() != Some(ns));
                    }
                }
            }
        }
        self.dirty = true;
    }
}

/// The write-ahead log beside a snapshot file.
fn wal_path(persist: &std::path::Path) -> PathBuf {
    let mut p = persist.as_os_str().to_owned();
    p.push(".wal");
    PathBuf::from(p)
}

/// A cluster's store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub inner: Arc<Mutex<Inner>>,
    pub changes: broadcast::Sender<Change>,
    pub persist: Option<PathBuf>,
}

/// An API error with its HTTP code and Kubernetes reason.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub name: String,
    pub kind: String,
    pub group: String,
}

impl ApiError {
    pub fn not_found(res: &Resource, name: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", res.qualified()),
            name: name.into(),
            kind: res.plural.clone(),
            group: res.group.clone(),
        }
    }
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            name: String::new(),
            kind: String::new(),
            group: String::new(),
        }
    }
    pub fn status(&self) -> Value {
        let mut details = json!({});
        if !self.name.is_empty() {
            details = json!({ "name": self.name, "group": self.group, "kind": self.kind });
        }
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message, "reason": self.reason, "details": details, "code": self.code })
    }
}

fn key(ns: Option<&str>, name: &str) -> String {
    format!("{}/{name}", ns.unwrap_or(""))
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn uid() -> String {
    let h = |n: usize| {
        (0..n)
            .map(|_| format!("{:x}", fastrand::u8(..16)))
            .collect::<String>()
    };
    format!("{}-{}-{}-{}-{}", h(8), h(4), h(4), h(4), h(12))
}

/// A Secret as the real API server stores it: `stringData` merged into `data` (base64), its keys
/// winning, and not stored itself; `data` must be base64, or the body cannot be decoded (the real
/// server's JSON decoder of `[]byte` says so with this message).
fn normalize_secret(obj: &mut Value) -> Result<(), ApiError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(data) = obj.get("data").and_then(Value::as_object) {
        for v in data.values() {
            let Some(s) = v.as_str() else {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    "Secret in version \"v1\" cannot be handled as a Secret: data values must be base64 strings",
                ));
            };
            if let Err(e) = b64.decode(s) {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    format!(
                        "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data: {e}"
                    ),
                ));
            }
        }
    }
    let Some(m) = obj.as_object_mut() else {
        return Ok(());
    };
    let Some(string_data) = m.remove("stringData") else {
        return Ok(());
    };
    let Some(string_data) = string_data.as_object().cloned() else {
        return Ok(());
    };
    if !m.get("data").is_some_and(Value::is_object) {
        m.insert("data".into(), json!({}));
    }
    let data = m["data"].as_object_mut().expect("data object");
    for (k, v) in string_data {
        let text = match v {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        };
        data.insert(k, Value::String(b64.encode(text)));
    }
    Ok(())
}

/// A Lease's MicroTimes as the real API server writes them back: RFC 3339 in UTC with exactly six
/// fractional digits (`metav1.MicroTime`, `RFC3339Micro`), whatever precision the client sent.
fn normalize_lease(obj: &mut Value) -> Result<(), ApiError> {
    for field in ["acquireTime", "renewTime"] {
        let Some(v) = obj["spec"].get(field).and_then(Value::as_str) else {
            continue;
        };
        let t: jiff::Timestamp = v.parse().map_err(|e| {
            ApiError::new(
                400,
                "BadRequest",
                format!("Lease in version \"v1\" cannot be handled as a Lease: spec.{field}: {e}"),
            )
        })?;
        obj["spec"][field] = Value::String(t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string());
    }
    Ok(())
}

/// Fields that count as "spec" for generation: everything but metadata and status.
fn spec_of(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    c
}

impl Store {
    pub fn new(persist: Option<PathBuf>) -> Store {
        let (tx, _) = broadcast::channel(4096);
        let mut inner = Inner {
            rv: 1,
            objects: BTreeMap::new(),
            crds: Vec::new(),
            dirty: false,
            wal: None,
        };
        let loaded = persist
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<Persisted>(&b).ok());
        match loaded {
            Some(p) => {
                inner.rv = p.resource_version.max(1);
                inner.objects = p.objects;
            }
            None => {
                for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                    inner.rv += 1;
                    let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "uid": uid(), "resourceVersion": inner.rv.to_string(), "creationTimestamp": now(), "labels": {"kubernetes.io/metadata.name": ns}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
                    inner
                        .objects
                        .entry("/namespaces".into())
                        .or_default()
                        .insert(key(None, ns), obj);
                }
                inner.dirty = true;
            }
        }
        if let Some(p) = &persist {
            // Replay what was acknowledged after the last snapshot (a torn last line was never
            // acknowledged), then keep appending to the same log.
            let wal = wal_path(p);
            let snapshot_rv = inner.rv;
            if let Ok(text) = std::fs::read(&wal) {
                for line in text.split(|b| *b == b'\n') {
                    if let Ok(e) = serde_json::from_slice::<WalEntry>(line)
                        && e.rv > snapshot_rv
                    {
                        inner.rv = inner.rv.max(e.rv);
                        inner.apply(&e.res, &e.key, e.obj);
                    }
                }
            }
            if let Some(d) = wal.parent() {
                let _ = std::fs::create_dir_all(d);
            }
            inner.wal = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&wal)
                .ok();
        }
        let store = Store {
            inner: Arc::new(Mutex::new(inner)),
            changes: tx,
            persist,
        };
        store.refresh_crds();
        store
    }

    /// Rebuild the served CRD resources from stored CRDs.
    fn refresh_crds(&self) {
        let mut inner = self.inner.lock().expect("store");
        let crds: Vec<Resource> = inner
            .objects
            .get("apiextensions.k8s.io/customresourcedefinitions")
            .map(|m| {
                m.values()
                    .flat_map(|crd| {
                        let spec = &crd["spec"];
                        let group = spec["group"].as_str().unwrap_or("").to_string();
                        let plural = spec["names"]["plural"].as_str().unwrap_or("").to_string();
                        let kind = spec["names"]["kind"].as_str().unwrap_or("").to_string();
                        let namespaced = spec["scope"].as_str() != Some("Cluster");
                        let short: Vec<String> = spec["names"]["shortNames"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|s| s.as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default();
                        spec["versions"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|v| v["served"].as_bool().unwrap_or(true))
                            .map(move |v| Resource {
                                group: group.clone(),
                                version: v["name"].as_str().unwrap_or("v1").to_string(),
                                plural: plural.clone(),
                                kind: kind.clone(),
                                namespaced,
                                status: v["subresources"]["status"].is_object(),
                                short_names: short.clone(),
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .unwrap_or_default();
        inner.crds = crds;
    }

    /// Every served resource.
    pub fn resources(&self) -> Vec<Resource> {
        let mut all = builtin();
        all.extend(self.inner.lock().expect("store").crds.clone());
        all
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Resource> {
        self.resources()
            .into_iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<Resource> {
        let (g, v) = api_version.split_once('/').unwrap_or(("", api_version));
        self.resources()
            .into_iter()
            .find(|r| r.group == g && r.version == v && r.kind == kind)
    }

    fn emit(&self, res: &Resource, kind: &'static str, obj: &Value) {
        let _ = self.changes.send(Change {
            resource: res.key(),
            kind,
            object: obj.clone(),
        });
    }

    fn with_type(res: &Resource, mut obj: Value) -> Value {
        if let Some(m) = obj.as_object_mut() {
            m.insert("apiVersion".into(), Value::String(res.api_version()));
            m.insert("kind".into(), Value::String(res.kind.clone()));
        }
        obj
    }

    pub fn get(&self, res: &Resource, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let inner = self.inner.lock().expect("store");
        inner
            .objects
            .get(&res.key())
            .and_then(|m| m.get(&key(ns, name)))
            .cloned()
            .map(|o| Self::with_type(res, o))
            .ok_or_else(|| ApiError::not_found(res, name))
    }

    pub fn list(&self, res: &Resource, ns: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.inner.lock().expect("store");
        let items = inner
            .objects
            .get(&res.key())
            .map(|m| {
                m.values()
                    .filter(|o| ns.is_none() || o["metadata"]["namespace"].as_str() == ns)
                    .cloned()
                    .map(|o| Self::with_type(res, o))
                    .collect()
            })
            .unwrap_or_default();
        (items, inner.rv)
    }

    pub fn current_rv(&self) -> u64 {
        self.inner.lock().expect("store").rv
    }

    fn namespace_exists(inner: &Inner, ns: &str) -> bool {
        inner
            .objects
            .get("/namespaces")
            .is_some_and(|m| m.contains_key(&key(None, ns)))
    }

    pub fn create(
        &self,
        res: &Resource,
        ns: Option<&str>,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut inner = self.inner.lock().expect("store");
        if res.namespaced {
            let Some(ns) = ns else {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    "the namespace of the object must be set",
                ));
            };
            if !Self::namespace_exists(&inner, ns) {
                let mut e =
                    ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"));
                e.name = ns.into();
                e.kind = "namespaces".into();
                return Err(e);
            }
        }
        if !obj.is_object() {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the body is not an object",
            ));
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        if res.key() == "/secrets" {
            normalize_secret(&mut obj)?;
        }
        if res.key() == "coordination.k8s.io/leases" {
            normalize_lease(&mut obj)?;
        }
        let mut name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if name.is_empty() {
            if let Some(prefix) = obj["metadata"]["generateName"].as_str() {
                name = format!(
                    "{prefix}{}",
                    (0..5)
                        .map(|_| fastrand::alphanumeric().to_ascii_lowercase())
                        .collect::<String>()
                );
            } else {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                        res.kind
                    ),
                ));
            }
        }
        let k = key(if res.namespaced { ns } else { None }, &name);
        if inner
            .objects
            .get(&res.key())
            .is_some_and(|m| m.contains_key(&k))
        {
            let mut e = ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", res.qualified()),
            );
            e.name = name.clone();
            e.kind = res.plural.clone();
            e.group = res.group.clone();
            return Err(e);
        }
        inner.rv += 1;
        let rv = inner.rv;
        {
            let m = obj["metadata"].as_object_mut().expect("metadata object");
            m.insert("name".into(), Value::String(name.clone()));
            if res.namespaced {
                m.insert(
                    "namespace".into(),
                    Value::String(ns.unwrap_or("default").into()),
                );
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), Value::String(uid()));
            m.insert("resourceVersion".into(), Value::String(rv.to_string()));
            m.insert("generation".into(), json!(1));
            m.insert("creationTimestamp".into(), Value::String(now()));
        }
        if res.plural == "namespaces" {
            obj["status"] = json!({"phase": "Active"});
        }
        if res.plural == "customresourcedefinitions" {
            let kind = obj["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let plural = obj["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or("")
                .to_string();
            obj["status"] = json!({
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now()},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now()}
                ],
                "acceptedNames": {"kind": kind, "plural": plural},
                "storedVersions": obj["spec"]["versions"].as_array().map(|a| a.iter().filter(|v| v["storage"].as_bool() == Some(true)).filter_map(|v| v["name"].as_str()).map(|s| json!(s)).collect::<Vec<_>>()).unwrap_or_default()
            });
        }
        let obj = Self::with_type(res, obj);
        if dry_run {
            inner.rv -= 1;
            return Ok(obj);
        }
        if let Err(e) = inner.log(&res.key(), &k, Some(&obj)) {
            inner.rv -= 1;
            return Err(e);
        }
        inner.apply(&res.key(), &k, Some(obj.clone()));
        drop(inner);
        if res.plural == "customresourcedefinitions" {
            self.refresh_crds();
        }
        self.emit(res, "ADDED", &obj);
        Ok(obj)
    }

    /// Replace an object. `subresource_status`: only status changes; otherwise status is kept for
    /// resources with a status subresource.
    pub fn update(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        subresource_status: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut inner = self.inner.lock().expect("store");
        let k = key(if res.namespaced { ns } else { None }, name);
        let Some(old) = inner
            .objects
            .get(&res.key())
            .and_then(|m| m.get(&k))
            .cloned()
        else {
            return Err(ApiError::not_found(res, name));
        };
        if !obj.is_object() {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the body is not an object",
            ));
        }
        if res.key() == "/secrets" {
            normalize_secret(&mut obj)?;
        }
        if res.key() == "coordination.k8s.io/leases" {
            normalize_lease(&mut obj)?;
        }
        // A stale resourceVersion is a 409 Conflict, worded as the real API server words it:
        // `OptimisticLockErrorMsg` in k8s.io/apiserver/pkg/registry/generic/registry/store.go, wrapped
        // by `apierrors.NewConflict` ("Operation cannot be fulfilled on %s %q: %v") with the
        // group-qualified plural, and details {name, group, kind: plural}. As seen from a real cluster
        // in fabric8io/kubernetes-client#5635: `Operation cannot be fulfilled on
        // leases.coordination.k8s.io "abc": the object has been modified; please apply your changes
        // to the latest version and try again`, code 409, reason Conflict, kind leases.
        if let Some(want) = obj["metadata"]["resourceVersion"].as_str()
            && !want.is_empty()
            && want != old["metadata"]["resourceVersion"].as_str().unwrap_or("")
        {
            let mut e = ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    res.qualified()
                ),
            );
            e.name = name.into();
            e.kind = res.plural.clone();
            e.group = res.group.clone();
            return Err(e);
        }
        if subresource_status {
            let status = obj.get("status").cloned().unwrap_or(Value::Null);
            obj = old.clone();
            obj["status"] = status;
        } else if res.status
            && let Some(s) = old.get("status")
        {
            obj["status"] = s.clone();
        }
        // Server-owned metadata.
        let mut generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        if !subresource_status && spec_of(&old) != spec_of(&obj) {
            generation += 1;
        }
        inner.rv += 1;
        let rv = inner.rv;
        {
            if !obj["metadata"].is_object() {
                obj["metadata"] = json!({});
            }
            let m = obj["metadata"].as_object_mut().expect("metadata");
            for f in ["uid", "creationTimestamp", "namespace", "name"] {
                if let Some(v) = old["metadata"].get(f) {
                    m.insert(f.into(), v.clone());
                }
            }
            m.insert("resourceVersion".into(), Value::String(rv.to_string()));
            m.insert("generation".into(), json!(generation));
        }
        let obj = Self::with_type(res, obj);
        if obj == Self::with_type(res, old.clone()) {
            inner.rv -= 1;
            return Ok(Self::with_type(res, old));
        }
        if dry_run {
            inner.rv -= 1;
            return Ok(obj);
        }
        if let Err(e) = inner.log(&res.key(), &k, Some(&obj)) {
            inner.rv -= 1;
            return Err(e);
        }
        inner.apply(&res.key(), &k, Some(obj.clone()));
        drop(inner);
        if res.plural == "customresourcedefinitions" {
            self.refresh_crds();
        }
        self.emit(res, "MODIFIED", &obj);
        Ok(obj)
    }

    pub fn delete(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut inner = self.inner.lock().expect("store");
        let k = key(if res.namespaced { ns } else { None }, name);
        if !inner
            .objects
            .get(&res.key())
            .is_some_and(|m| m.contains_key(&k))
        {
            return Err(ApiError::not_found(res, name));
        }
        if dry_run {
            return Ok(inner.objects[&res.key()][&k].clone());
        }
        let mut obj = inner.objects[&res.key()][&k].clone();
        inner.rv += 1;
        if let Err(e) = inner.log(&res.key(), &k, None) {
            inner.rv -= 1;
            return Err(e);
        }
        obj["metadata"]["resourceVersion"] = Value::String(inner.rv.to_string());
        // (Deleting a namespace deletes what is in it.)
        inner.apply(&res.key(), &k, None);
        drop(inner);
        if res.plural == "customresourcedefinitions" {
            self.refresh_crds();
        }
        let obj = Self::with_type(res, obj);
        self.emit(res, "DELETED", &obj);
        Ok(obj)
    }

    /// Write the store to its file if it changed.
    pub fn flush(&self) {
        let Some(path) = &self.persist else { return };
        // Under the store's lock: no change can land between the snapshot and the log's truncation.
        let mut inner = self.inner.lock().expect("store");
        if !inner.dirty {
            return;
        }
        let snapshot = Persisted {
            resource_version: inner.rv,
            objects: inner.objects.clone(),
        };
        if crate::core::write_json(path, &snapshot).is_ok() {
            inner.dirty = false;
            if let Some(f) = &inner.wal {
                let _ = f.set_len(0);
            }
        }
    }
}
