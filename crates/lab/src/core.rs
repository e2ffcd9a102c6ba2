//! The lab's shared ground: where its files live, the topology the tools read, faults, and the
//! file-locked read-modify-write every stand-in uses.
//!
//! Owns the contract between the in-process lab (API servers, simulated controllers) and the tool
//! stand-ins, which run as separate processes and find the lab through `BOOTSTRAP_LAB_DIR`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Environment variable naming the lab directory, set for every step the lab runs.
pub const LAB_DIR_ENV: &str = "BOOTSTRAP_LAB_DIR";
/// Extra faults as JSON (a list of [`Fault`]), on top of the plan's `lab_settings.faults`.
pub const LAB_FAULTS_ENV: &str = "BOOTSTRAP_LAB_FAULTS";

/// The lab directory, `<state dir>/lab/`, and the files in it.
#[derive(Debug, Clone)]
pub struct LabDir(pub PathBuf);

impl LabDir {
    pub fn for_state_dir(state_dir: &Path) -> Self {
        LabDir(state_dir.join("lab"))
    }
    /// The lab directory of the current process (a stand-in), from `BOOTSTRAP_LAB_DIR`.
    pub fn from_env() -> Option<Self> {
        std::env::var_os(LAB_DIR_ENV).map(|p| LabDir(PathBuf::from(p)))
    }
    pub fn root(&self) -> &Path {
        &self.0
    }
    /// [`Topology`] as JSON, written when the lab starts.
    pub fn topology(&self) -> PathBuf {
        self.0.join("topology.json")
    }
    /// `{cluster name: "http://127.0.0.1:PORT"}`, rewritten whenever the API servers start.
    pub fn endpoints(&self) -> PathBuf {
        self.0.join("endpoints.json")
    }
    /// Talos node states (maintenance, configured, bootstrapped…), owned by the talosctl stand-in.
    pub fn talos(&self) -> PathBuf {
        self.0.join("talos.json")
    }
    /// The lab's 1Password vault, owned by the op stand-in.
    pub fn vault(&self) -> PathBuf {
        self.0.join("vault.json")
    }
    /// Fault counters (how many times a fail-N fault has fired).
    pub fn fault_counters(&self) -> PathBuf {
        self.0.join("faults.json")
    }
    /// The API server's persisted objects for one cluster.
    pub fn cluster_objects(&self, cluster: &str) -> PathBuf {
        self.0.join("clusters").join(cluster).join("objects.json")
    }
    /// Directory of tool links put first on PATH for steps.
    pub fn bin(&self) -> PathBuf {
        self.0.join("bin")
    }
    /// The lab's Git "remote": the sample GitOps tree Flux reads.
    pub fn gitops(&self) -> PathBuf {
        self.0.join("gitops")
    }
    /// Lock file guarding read-modify-write of the JSON files above.
    pub fn lock(&self) -> PathBuf {
        self.0.join(".lock")
    }
    /// API server outages, `{cluster name: until (Unix epoch ms)}` ([`start_outage`]); the serving
    /// process polls it.
    pub fn outages(&self) -> PathBuf {
        self.0.join("outages.json")
    }
    /// A kubeconfig with every cluster's context (`<context>` → its API server), written by the
    /// serving process: what a second user of a shared lab, or a test, points kubectl at.
    pub fn kubeconfig(&self) -> PathBuf {
        self.0.join("kubeconfig")
    }
    /// The outages the serving process has put in force, `{cluster: until}` (its acknowledgement).
    pub fn outages_applied(&self) -> PathBuf {
        self.0.join("outages-applied.json")
    }
    /// The serve lock: held (`File::try_lock`) by the one process serving the lab's API servers
    /// and controllers; holds that process' pid once its servers are up.
    pub fn serve_lock(&self) -> PathBuf {
        self.0.join("serve.lock")
    }
}

/// What the stand-ins need to know about the simulated environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Topology {
    /// Simulated durations are divided by this.
    pub speed: f64,
    pub clusters: Vec<ClusterTopo>,
    pub git: GitTopo,
    pub faults: Vec<Fault>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterTopo {
    pub name: String,
    pub id: u32,
    pub context: String,
    pub talos_context: String,
    pub endpoint: String,
    pub pod_cidr: String,
    pub service_cidr: String,
    pub dns_ip: String,
    pub nodes: Vec<NodeTopo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeTopo {
    pub name: String,
    pub ip: String,
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GitTopo {
    pub owner: String,
    pub repository: String,
    pub branch: String,
    /// Path per cluster name.
    pub paths: BTreeMap<String, String>,
}

/// A fault injected into the lab, for rehearsals and tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// A stable name, used for the fail-N counter.
    pub id: String,
    /// What the fault does.
    #[serde(flatten)]
    pub kind: FaultKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultKind {
    /// A tool invocation whose argv (joined with spaces, tool name first) contains `matches`
    /// fails `times` times with `stderr` and `exit_code`, then behaves normally.
    Fail {
        matches: String,
        times: u32,
        stderr: String,
        #[serde(default = "one")]
        exit_code: i32,
    },
    /// A tool invocation whose argv contains `matches` hangs until killed.
    Hang { matches: String },
    /// A workload's rollout sticks at `ready` of n.
    RolloutStuck {
        cluster: String,
        namespace: String,
        name: String,
        ready: u32,
    },
    /// A node stays NotReady whatever happens.
    NodeNotReady { cluster: String, node: String },
    /// Cluster Mesh never connects.
    MeshNeverConnects,
    /// A Helm release is left in `pending-upgrade`.
    HelmPendingUpgrade {
        cluster: String,
        namespace: String,
        release: String,
    },
    /// A CephCluster never gets past `HEALTH_WARN` (e.g. too few OSDs for the pool size).
    CephHealthWarn { cluster: String },
    /// A HelmRelease's install (or upgrade) fails with a chart error `message`.
    HelmreleaseFails {
        cluster: String,
        namespace: String,
        name: String,
        message: String,
    },
    /// A Kustomization fails to build or apply with `message` (its dependents then report
    /// `dependency '…' is not ready`).
    KustomizationFails {
        cluster: String,
        name: String,
        message: String,
    },
    /// When a tool invocation whose argv contains `matches` runs (once), the API server of
    /// `cluster` becomes unreachable for `seconds` from that moment: new connections are refused
    /// and open ones are cut, as when a real control plane goes down. Then it serves again, on
    /// the same address, with every acknowledged write.
    ApiUnreachable {
        cluster: String,
        matches: String,
        seconds: u64,
    },
    /// The next `times` PUTs to objects of `resource` (plural such as `secrets`, `leases`, or
    /// qualified, `leases.coordination.k8s.io`) whose name starts with `name_prefix` meet a
    /// concurrent write first: the server changes the stored object (the annotation
    /// `lab.bootstrap.dev/concurrent-write`) just before handling the request, so a request that
    /// names a resourceVersion gets the real 409 Conflict.
    WriteConflict {
        cluster: String,
        resource: String,
        #[serde(default)]
        name_prefix: String,
        times: u32,
    },
}

/// The annotation the `write-conflict` fault's concurrent writer sets.
pub const CONCURRENT_WRITE_ANNOTATION: &str = "lab.bootstrap.dev/concurrent-write";

fn one() -> i32 {
    1
}

impl Topology {
    /// The faults of a plan (`lab_settings.faults`, as JSON values; `index` names the entry in
    /// errors) plus those of `BOOTSTRAP_LAB_FAULTS`.
    pub fn faults(plan_faults: &[serde_json::Value]) -> Result<Vec<Fault>> {
        let mut faults: Vec<Fault> = Vec::new();
        for (i, v) in plan_faults.iter().enumerate() {
            let f: Fault = serde_json::from_value(v.clone())
                .map_err(|e| color_eyre::eyre::eyre!("lab_settings.faults[{i}]: {e}"))?;
            faults.push(f);
        }
        if let Ok(extra) = std::env::var(LAB_FAULTS_ENV) {
            let more: Vec<Fault> = serde_json::from_str(&extra)
                .map_err(|e| color_eyre::eyre::eyre!("{LAB_FAULTS_ENV}: {e}"))?;
            faults.extend(more);
        }
        Ok(faults)
    }

    pub fn load(dir: &LabDir) -> Result<Topology> {
        read_json(&dir.topology())?.ok_or_else(|| {
            color_eyre::eyre::eyre!(
                "the lab is not set up: {} is missing",
                dir.topology().display()
            )
        })
    }

    /// The cluster and node with this IP.
    pub fn node_by_ip(&self, ip: &str) -> Option<(&ClusterTopo, &NodeTopo)> {
        self.clusters
            .iter()
            .find_map(|c| c.nodes.iter().find(|n| n.ip == ip).map(|n| (c, n)))
    }

    pub fn cluster_by_context(&self, context: &str) -> Option<&ClusterTopo> {
        self.clusters
            .iter()
            .find(|c| c.context == context || c.name == context)
    }

    pub fn cluster(&self, name: &str) -> Option<&ClusterTopo> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Make `cluster`'s API server unreachable for `seconds` from now (an outage already under way
/// lasts until the later of the two ends). Returns the end, epoch ms. The serving process, which
/// may be another one, picks it up within ~100 ms.
pub fn start_outage(dir: &LabDir, cluster: &str, seconds: u64) -> Result<u64> {
    let until = now_ms().saturating_add(seconds.saturating_mul(1000));
    update_json(dir, &dir.outages(), |m: &mut BTreeMap<String, u64>| {
        let end = m.entry(cluster.to_string()).or_insert(0);
        *end = (*end).max(until);
        *end
    })
}

/// The pid of the process serving the lab: the serve lock is held and names it (it writes its pid
/// once its API servers are up). None when nobody serves it, or it is still starting.
pub fn serving_pid(dir: &LabDir) -> Option<u32> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .open(dir.serve_lock())
        .ok()?;
    match f.try_lock_shared() {
        Ok(()) => None,
        Err(std::fs::TryLockError::WouldBlock) => std::fs::read_to_string(dir.serve_lock())
            .ok()?
            .trim()
            .parse()
            .ok(),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

/// Wait (up to `timeout`) until the serving process has put the outage ending at `until` in force:
/// its listener closed and its connections cut. False when nobody serves the lab or it did not
/// happen in time.
pub fn wait_outage_applied(
    dir: &LabDir,
    cluster: &str,
    until: u64,
    timeout: std::time::Duration,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if until <= now_ms() {
            return true;
        }
        let applied = read_json::<BTreeMap<String, u64>>(&dir.outages_applied())
            .ok()
            .flatten()
            .and_then(|m| m.get(cluster).copied())
            .is_some_and(|u| u >= until);
        if applied {
            return true;
        }
        if serving_pid(dir).is_none() || std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Count one firing of fault `id` if it has fired fewer than `times` times; whether it fires.
pub fn fire(dir: &LabDir, id: &str, times: u32) -> bool {
    update_json(
        dir,
        &dir.fault_counters(),
        |m: &mut BTreeMap<String, u32>| {
            let n = m.entry(id.to_string()).or_insert(0);
            if *n < times {
                *n += 1;
                true
            } else {
                false
            }
        },
    )
    .unwrap_or(false)
}

/// The faults in force: the topology's and those added later in `extra-faults.json`.
pub fn faults(dir: &LabDir) -> Vec<Fault> {
    let mut faults = Topology::load(dir).map(|t| t.faults).unwrap_or_default();
    if let Ok(Some(extra)) = read_json::<Vec<Fault>>(&dir.root().join("extra-faults.json")) {
        faults.extend(extra);
    }
    faults
}

/// Read a JSON file; `None` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Write JSON atomically: temp file in the same directory, fsync, rename.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("f"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(value)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Read-modify-write a JSON file under the lab lock (an exclusive lock on `dir.lock()`).
pub fn update_json<T, R>(dir: &LabDir, path: &Path, f: impl FnOnce(&mut T) -> R) -> Result<R>
where
    T: Default + Serialize + DeserializeOwned,
{
    std::fs::create_dir_all(dir.root())?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.lock())?;
    lock.lock()?;
    let mut value: T = read_json(path)?.unwrap_or_default();
    let out = f(&mut value);
    write_json(path, &value)?;
    drop(lock);
    Ok(out)
}
