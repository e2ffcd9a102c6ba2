//! A throwaway workspace for engine tests: a `lab: false` plan, one phase file (`{W}` in it becomes
//! the workspace path), a `bin/` first on PATH for test-only tools, and the real binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{bin, text};

/// Two clusters of one node each.
pub const TWO_CLUSTERS: &str = r#"
name: enginetest
lab: false
clusters:
  - name: infra
    id: 1
    context: admin@infra
    talos_context: infra
    endpoint: https://10.25.11.11:6443
    pod_cidr: 10.244.0.0/16
    service_cidr: 10.96.0.0/16
    dns_ip: 10.96.0.10
    nodes:
      - { name: infra-01, ip: 10.25.11.11, role: controlplane }
  - name: apps
    id: 2
    context: admin@apps
    talos_context: apps
    endpoint: https://10.25.11.14:6443
    pod_cidr: 10.246.0.0/16
    service_cidr: 10.97.0.0/16
    dns_ip: 10.97.0.10
    nodes:
      - { name: apps-01, ip: 10.25.11.14, role: controlplane }
versions: { talos: v1.11.5, kubernetes: 1.34.2, cilium: 1.18.4, flux: 2.7.3 }
git: { provider: github, owner: o, repository: r, paths: { infra: a, apps: b } }
secrets:
  token: op://vault/item/field
paths:
  kubeconfig: "{{ state_dir }}/kubeconfig"
  talosconfig: "{{ state_dir }}/talosconfig"
  talos_configs: "{{ state_dir }}/talos"
"#;

/// One cluster of one node.
pub const ONE_CLUSTER: &str = r#"
name: enginemore
lab: false
clusters:
  - name: infra
    id: 1
    context: admin@infra
    talos_context: infra
    endpoint: https://10.25.11.11:6443
    pod_cidr: 10.244.0.0/16
    service_cidr: 10.96.0.0/16
    dns_ip: 10.96.0.10
    nodes:
      - { name: infra-01, ip: 10.25.11.11, role: controlplane }
versions: { talos: v1.11.5, kubernetes: 1.34.2, cilium: 1.18.4, flux: 2.7.3 }
git: { provider: github, owner: o, repository: r, paths: { infra: a } }
paths:
  kubeconfig: "{{ state_dir }}/kubeconfig"
  talosconfig: "{{ state_dir }}/talosconfig"
  talos_configs: "{{ state_dir }}/talos"
"#;

pub struct Ws {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Ws {
    pub fn new(plan: &str, phase: &str) -> Ws {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        for d in ["phases", "bin", "marks"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("plan.yaml"), plan).unwrap();
        let ws = Ws { _tmp: tmp, root };
        ws.phase(phase);
        ws
    }
    /// Replace the phase file.
    pub fn phase(&self, phase: &str) {
        std::fs::write(
            self.root.join("phases/01-test.yaml"),
            phase.replace("{W}", &self.root.display().to_string()),
        )
        .unwrap();
    }
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--plan")
            .arg(self.root.join("plan.yaml"))
            .arg("--phases")
            .arg(self.root.join("phases"))
            .arg("--state-dir")
            .arg(self.root.join("state"));
        c.args(args)
            .env("CI", "true")
            .env("NO_COLOR", "1")
            .env_remove("BOOTSTRAP_PLAN")
            .env_remove("BOOTSTRAP_STATE_DIR")
            .env_remove("KUBECONFIG")
            .current_dir(&self.root)
            .stdin(Stdio::null());
        let path = format!(
            "{}:{}",
            self.root.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("PATH", path);
        c
    }
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    pub fn read(&self, f: &str) -> String {
        std::fs::read_to_string(self.root.join(f)).unwrap_or_default()
    }
    /// `bootstrap status --format json`, checked for its schema version.
    pub fn status(&self) -> Value {
        let out = self.run(&["status", "--format", "json"]);
        assert_eq!(out.status.code(), Some(0), "{}", all(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["schema"], 1,
            "status JSON without its schema version: {v}"
        );
        v
    }
    pub fn wait_for(&self, f: &str) {
        let t = Instant::now();
        while !self.root.join(f).exists() {
            assert!(t.elapsed() < Duration::from_secs(60), "{f} never appeared");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn step<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {status}"))
}

pub fn all(o: &Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

/// Alive and not a zombie (the state letter in /proc/<pid>/stat).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}
