//! The plan file: one environment (clusters, nodes, CIDRs, versions, Git source, secret references).
//!
//! Types only, with source spans on the fields that lint points at. Loading lives in `spec::load`,
//! meaning checks in `lint`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// One environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Short name; also names the default state dir `.bootstrap/<name>/`.
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: String,
    /// Run against the simulated lab instead of real machines.
    #[serde(default)]
    pub lab: bool,
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub mesh: Mesh,
    pub versions: Versions,
    pub git: GitSource,
    /// Secret references by name. Each value must be an `op://vault/item/field` reference.
    #[serde(default)]
    pub secrets: BTreeMap<String, Spanned<String>>,
    pub paths: Paths,
    /// Free variables for templates (`vars.x`).
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Lab settings (speed, faults); only read when `lab: true`.
    #[serde(default)]
    pub lab_settings: LabSettings,
    /// Where the run's state lives: the local state directory (default) or, for a team, a
    /// namespace of a cluster (`backend: kubernetes`).
    #[serde(default)]
    pub state: Option<StateSettings>,
    /// The directory of the plan file, absolute (set by `spec::load_plan`): relative paths written
    /// in the plan are read from here, as cargo reads paths in `Cargo.toml`.
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: Spanned<String>,
    /// Cilium cluster id, 1–255, unique across the mesh.
    pub id: Spanned<u32>,
    /// The kube context name, as the tools really produce it (`admin@<cluster>` for talosctl).
    pub context: String,
    /// The talosconfig context name.
    pub talos_context: String,
    /// The Kubernetes API endpoint, e.g. https://10.25.11.11:6443.
    pub endpoint: Spanned<String>,
    pub pod_cidr: Spanned<Ipv4Net>,
    pub service_cidr: Spanned<Ipv4Net>,
    /// CoreDNS service IP; must lie inside `service_cidr`.
    pub dns_ip: Spanned<Ipv4Addr>,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Controlplane,
    Worker,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: Spanned<String>,
    pub ip: Spanned<Ipv4Addr>,
    pub role: Role,
    /// Install disk (default /dev/sda).
    #[serde(default)]
    pub install_disk: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mesh {
    #[serde(default)]
    pub enabled: bool,
    /// Must cover every cluster's pod CIDR when the mesh is enabled.
    #[serde(default)]
    pub native_routing_cidr: Option<Spanned<Ipv4Net>>,
    #[serde(default)]
    pub apiserver: MeshApiserver,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshApiserver {
    /// clustermesh-apiserver Service type: LoadBalancer or NodePort.
    #[serde(default = "default_service_type")]
    pub service_type: String,
    /// Addresses the other clusters reach it on, by cluster name.
    #[serde(default)]
    pub addresses: BTreeMap<String, Vec<String>>,
}

fn default_service_type() -> String {
    "NodePort".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Versions {
    pub talos: String,
    pub kubernetes: String,
    pub cilium: String,
    pub flux: String,
    /// Every platform chart's version, by chart name.
    #[serde(default)]
    pub charts: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitSource {
    /// Only `github` today.
    pub provider: String,
    pub owner: String,
    pub repository: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Path in the repository per cluster name.
    pub paths: BTreeMap<String, String>,
    #[serde(default)]
    pub personal: bool,
    /// A local clone of the repository, for files steps read from it (the Cilium values); relative
    /// to the plan file. `{{ state_dir }}` may be used (the lab serves its tree from the state
    /// directory). Default: `lab/gitops`, the reference tree of the project the plan is in.
    #[serde(default)]
    pub checkout: Option<String>,
    /// Where each phase's Flux Kustomizations are defined in the repository, by phase id and
    /// cluster name (a user with another layout edits only these).
    #[serde(default)]
    pub phases: BTreeMap<String, BTreeMap<String, String>>,
    /// The Cilium values file of each cluster, relative to the repository root: the only copy,
    /// read by the HelmRelease (valuesFrom) and by the bootstrap install (`helm -f`).
    #[serde(default)]
    pub cilium_values: BTreeMap<String, String>,
}

fn default_branch() -> String {
    "main".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    /// Where `talosctl kubeconfig` writes the merged kubeconfig.
    pub kubeconfig: Spanned<String>,
    /// Where the talosconfig goes.
    pub talosconfig: Spanned<String>,
    /// Directory for generated Talos machine configs and secrets.
    pub talos_configs: Spanned<String>,
    /// Talos machine-config patches, by name (files that must exist; relative to the plan file).
    #[serde(default)]
    pub patches: BTreeMap<String, Spanned<String>>,
    /// Other files steps reference, by name (files that must exist; relative to the plan file).
    #[serde(default)]
    pub files: BTreeMap<String, Spanned<String>>,
}

/// `state:`: where the journal and the lock live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    pub backend: StateBackend,
    /// The kube context of the cluster that keeps the state (default: the first cluster's).
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default = "default_state_namespace")]
    pub namespace: String,
    /// Keep the state locally until this phase's gate has passed, then move it (the cluster that
    /// keeps it does not exist before). Without it, the state is in the cluster from the start.
    #[serde(default)]
    pub after: Option<Spanned<String>>,
    /// The kubeconfig to reach it (relative to the plan file; default: `paths.kubeconfig` when
    /// that file exists, else `$KUBECONFIG` or `~/.kube/config`, as kubectl does).
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// How long the run lock (a Lease) lasts without renewal (default 30 s; renewed every quarter).
    #[serde(default)]
    pub lease_seconds: Option<Spanned<u32>>,
}

impl StateSettings {
    pub fn lease_seconds(&self) -> u32 {
        self.lease_seconds.as_ref().map_or(30, |s| s.value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    Local,
    Kubernetes,
}

fn default_state_namespace() -> String {
    "bootstrap-system".into()
}

/// Lab settings: how fast simulated time runs and which faults to inject.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSettings {
    /// Simulated durations are divided by this (default 1.0; higher is faster).
    #[serde(default = "default_speed")]
    pub speed: f64,
    #[serde(default)]
    pub faults: Vec<serde_json::Value>,
    /// Where the lab lives (relative to the plan file; `{{ state_dir }}` allowed). Default
    /// `<state dir>/lab`. Runs with different state directories and the same `dir` share one lab:
    /// the first serves it, the others attach. `BOOTSTRAP_LAB_HOME` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

impl Default for LabSettings {
    fn default() -> Self {
        LabSettings {
            speed: default_speed(),
            faults: Vec::new(),
            dir: None,
        }
    }
}

fn default_speed() -> f64 {
    1.0
}

impl Plan {
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name.value == name)
    }

    /// A path written in the plan: absolute as written, relative to the plan file's directory
    /// otherwise (without `.` or `..` parts).
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            absolute(&self.dir.join(p))
        }
    }

    /// A resolved path as the plan's directory placeholder and the way from it
    /// (`{{plan_dir}}/../talos/patches/common.yaml`): what fingerprints keep of a path the plan
    /// names relatively, so that moving the project or starting elsewhere changes nothing.
    pub fn placeholder(&self, resolved: &Path) -> String {
        let to: Vec<Component> = resolved.components().collect();
        let from: Vec<Component> = self.dir.components().collect();
        let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
        let mut out = String::from("{{plan_dir}}");
        for _ in common..from.len() {
            out.push_str("/..");
        }
        for c in &to[common..] {
            out.push('/');
            out.push_str(&c.as_os_str().to_string_lossy());
        }
        out
    }
}

/// `path` made absolute (against the current directory) without `.` or `..` parts, lexically: it
/// need not exist.
pub fn absolute(path: &Path) -> PathBuf {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A path as a person reads it in a message: relative to the current directory when it lies
/// under it, as given otherwise.
pub fn shown(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_in(dir: &str) -> Plan {
        let text = include_str!("../../plans/lab.yaml");
        let mut plan: Plan = serde_saphyr::from_str(text).unwrap();
        plan.dir = PathBuf::from(dir);
        plan
    }

    #[test]
    fn relative_paths_are_read_from_the_plan_directory() {
        let plan = plan_in("/p/plans");
        assert_eq!(
            plan.resolve("../talos/patches/common.yaml"),
            Path::new("/p/talos/patches/common.yaml")
        );
        assert_eq!(plan.resolve("a/./b.yaml"), Path::new("/p/plans/a/b.yaml"));
        assert_eq!(plan.resolve("/etc/x.yaml"), Path::new("/etc/x.yaml"));
    }

    #[test]
    fn a_placeholder_is_the_way_from_the_plan_directory() {
        let plan = plan_in("/p/plans");
        assert_eq!(
            plan.placeholder(Path::new("/p/talos/patches/common.yaml")),
            "{{plan_dir}}/../talos/patches/common.yaml"
        );
        assert_eq!(
            plan.placeholder(Path::new("/p/plans/x.yaml")),
            "{{plan_dir}}/x.yaml"
        );
        assert_eq!(plan.placeholder(Path::new("/p/plans")), "{{plan_dir}}");
    }
}
