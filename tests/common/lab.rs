//! A lab started in-process for a test, with the stand-ins linked to the real `bootstrap` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use bootstrap::spec::Plan;
use bootstrap_lab::{Lab, LabHandle};

pub struct TestLab {
    pub rt: tokio::runtime::Runtime,
    pub handle: Option<LabHandle>,
    pub tmp: tempfile::TempDir,
    pub plan: Plan,
}

impl TestLab {
    /// The lab of plans/lab.yaml, with extra faults (JSON list) if given.
    pub fn start(faults: Option<&str>) -> TestLab {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (mut plan, _) =
            bootstrap::spec::load_plan(&root.join("plans/lab.yaml")).expect("lab plan");
        if let Some(f) = faults {
            plan.lab_settings.faults = serde_json::from_str(f).expect("faults JSON");
        }
        let tmp = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = tmp.path().join("state");
        let handle = rt
            .block_on(Lab::start(
                &bootstrap::lab::config(&plan, &state, Path::new(env!("CARGO_BIN_EXE_bootstrap")))
                    .expect("lab config"),
            ))
            .expect("lab starts");
        TestLab {
            rt,
            handle: Some(handle),
            tmp,
            plan,
        }
    }

    pub fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    pub fn lab_dir(&self) -> PathBuf {
        self.state().join("lab")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.state().join("kubeconfig")
    }
    /// Files of the test (secrets, configs) live here.
    pub fn work(&self) -> PathBuf {
        let w = self.tmp.path().join("work");
        std::fs::create_dir_all(&w).unwrap();
        w
    }

    /// Run a stand-in as a step would: from the lab's bin dir, stdin closed.
    pub fn tool(&self, name: &str, args: &[&str]) -> Output {
        self.tool_env(name, args, &[])
    }

    pub fn tool_env(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(self.lab_dir().join("bin").join(name));
        c.args(args).current_dir(self.work()).stdin(Stdio::null());
        for (k, v) in self.handle.as_ref().unwrap().step_env() {
            c.env(k, v);
        }
        c.env("KUBECONFIG", self.kubeconfig())
            .env_remove("GITHUB_TOKEN");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run stand-in")
    }

    /// Talos for one cluster up to registered nodes: secrets, configs, apply, bootstrap, kubeconfig.
    pub fn talos_up(&self, cluster: &str) {
        let c = self.plan.cluster(cluster).unwrap();
        let w = self.work();
        let dir = w.join(cluster);
        std::fs::create_dir_all(&dir).unwrap();
        let s = |p: &str| dir.join(p).display().to_string();
        let ok = |o: Output| {
            assert_eq!(
                o.status.code(),
                Some(0),
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        ok(self.tool("talosctl", &["gen", "secrets", "-o", &s("secrets.yaml")]));
        ok(self.tool(
            "talosctl",
            &[
                "gen",
                "config",
                cluster,
                &c.endpoint.value,
                "--with-secrets",
                &s("secrets.yaml"),
                "--output-types",
                "controlplane,talosconfig",
                "-o",
                &s(""),
            ],
        ));
        for n in &c.nodes {
            ok(self.tool(
                "talosctl",
                &[
                    "apply-config",
                    "--insecure",
                    "-n",
                    &n.ip.value.to_string(),
                    "--file",
                    &s("controlplane.yaml"),
                ],
            ));
        }
        let first = c.nodes[0].ip.value.to_string();
        let tc = s("talosconfig");
        for _ in 0..100 {
            if self
                .tool("talosctl", &["--talosconfig", &tc, "-n", &first, "version"])
                .status
                .success()
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        ok(self.tool(
            "talosctl",
            &["--talosconfig", &tc, "-n", &first, "bootstrap"],
        ));
        ok(self.tool(
            "talosctl",
            &[
                "--talosconfig",
                &tc,
                "-n",
                &first,
                "kubeconfig",
                &self.kubeconfig().display().to_string(),
                "--force",
            ],
        ));
    }

    pub fn talosconfig(&self, cluster: &str) -> String {
        self.work()
            .join(cluster)
            .join("talosconfig")
            .display()
            .to_string()
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
