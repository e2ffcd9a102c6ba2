//! One table of each tool's commands and flags, at the versions the plans pin, and a reader that says
//! which command an argv runs and which of its flags the tool does not have.
//!
//! Sources: talosctl and helm from their own cobra-generated references (see `talosctl.rs`,
//! `helm.rs`); cilium-cli from `cilium/cilium` `cilium-cli/cli/cmd.go` (its root commands and
//! persistent flags) and real-tools §2; flux from real-tools §4 and the flux2 command tree; kubectl,
//! op and hubble by their top-level commands only. A command whose flags are `None` is checked for
//! its name only. Shared by lint; the lab's stand-ins can use it to parse the same way.

mod helm;
mod talosctl;

/// The tools the plans run that the lab stands in for (its multi-call binary answers to these
/// names).
pub const STAND_INS: &[&str] = &[
    "talosctl", "helm", "cilium", "hubble", "flux", "op", "kubectl",
];

/// One command (a path of subcommands) and, when known, all the flags it accepts.
#[derive(Debug, Clone, Copy)]
pub struct Cmd {
    /// e.g. `gen config`.
    pub path: &'static str,
    /// `-o|--output=`: short and long names, `=` when the flag takes a value. `None`: not listed.
    pub flags: Option<&'static [&'static str]>,
}

/// A tool: its commands, aliases, and flags accepted everywhere.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub name: &'static str,
    pub commands: &'static [Cmd],
    /// (alias path, canonical path).
    pub aliases: &'static [(&'static str, &'static str)],
    /// Flags every command accepts (persistent flags).
    pub global: &'static [&'static str],
    /// Groups whose subcommands are not all listed: any subcommand is accepted.
    pub open_groups: &'static [&'static str],
}

/// What is wrong with a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `word` is not a (sub)command of `parent` (empty: the tool itself).
    UnknownCommand {
        parent: String,
        word: String,
        suggestion: Option<String>,
    },
    /// `flag` is not a flag of `command`.
    UnknownFlag {
        command: String,
        flag: String,
        suggestion: Option<String>,
    },
}

const KUBECTL_GLOBAL: &[&str] = &[
    "--context=",
    "--kubeconfig=",
    "-n|--namespace=",
    "--cluster=",
    "--user=",
    "-s|--server=",
    "--token=",
    "--as=",
    "--as-group=",
    "--as-uid=",
    "--certificate-authority=",
    "--client-certificate=",
    "--client-key=",
    "--insecure-skip-tls-verify",
    "--request-timeout=",
    "--tls-server-name=",
    "--cache-dir=",
    "-v|--v=",
    "--match-server-version",
    "--username=",
    "--password=",
    "--profile=",
    "--profile-output=",
    "--disable-compression",
    "--warnings-as-errors",
    "--log-flush-frequency=",
    "-o|--output=",
    "-l|--selector=",
    "-f|--filename=",
    "-A|--all-namespaces",
];

#[rustfmt::skip]
const KUBECTL: &[Cmd] = &[
    Cmd { path: "annotate", flags: None }, Cmd { path: "api-resources", flags: None },
    Cmd { path: "api-versions", flags: None }, Cmd { path: "apply", flags: None },
    Cmd { path: "attach", flags: None }, Cmd { path: "auth", flags: None },
    Cmd { path: "autoscale", flags: None }, Cmd { path: "certificate", flags: None },
    Cmd { path: "cluster-info", flags: None }, Cmd { path: "completion", flags: None },
    Cmd { path: "config", flags: None }, Cmd { path: "config current-context", flags: None },
    Cmd { path: "config delete-cluster", flags: None }, Cmd { path: "config delete-context", flags: None },
    Cmd { path: "config delete-user", flags: None }, Cmd { path: "config get-clusters", flags: None },
    Cmd { path: "config get-contexts", flags: None }, Cmd { path: "config get-users", flags: None },
    Cmd { path: "config rename-context", flags: None }, Cmd { path: "config set", flags: None },
    Cmd { path: "config set-cluster", flags: None }, Cmd { path: "config set-context", flags: None },
    Cmd { path: "config set-credentials", flags: None }, Cmd { path: "config unset", flags: None },
    Cmd { path: "config use-context", flags: None }, Cmd { path: "config view", flags: None },
    Cmd { path: "cordon", flags: None }, Cmd { path: "cp", flags: None }, Cmd { path: "create", flags: None },
    Cmd { path: "debug", flags: None }, Cmd { path: "delete", flags: None },
    Cmd { path: "describe", flags: None }, Cmd { path: "diff", flags: None }, Cmd { path: "drain", flags: None },
    Cmd { path: "edit", flags: None }, Cmd { path: "events", flags: None }, Cmd { path: "exec", flags: None },
    Cmd { path: "explain", flags: None }, Cmd { path: "expose", flags: None }, Cmd { path: "get", flags: None },
    Cmd { path: "kustomize", flags: None }, Cmd { path: "label", flags: None }, Cmd { path: "logs", flags: None },
    Cmd { path: "options", flags: None }, Cmd { path: "patch", flags: None }, Cmd { path: "plugin", flags: None },
    Cmd { path: "port-forward", flags: None }, Cmd { path: "proxy", flags: None },
    Cmd { path: "replace", flags: None }, Cmd { path: "rollout", flags: None },
    Cmd { path: "rollout history", flags: None }, Cmd { path: "rollout pause", flags: None },
    Cmd { path: "rollout restart", flags: None }, Cmd { path: "rollout resume", flags: None },
    Cmd { path: "rollout status", flags: None }, Cmd { path: "rollout undo", flags: None },
    Cmd { path: "run", flags: None }, Cmd { path: "scale", flags: None }, Cmd { path: "set", flags: None },
    Cmd { path: "taint", flags: None }, Cmd { path: "top", flags: None }, Cmd { path: "uncordon", flags: None },
    Cmd { path: "version", flags: None }, Cmd { path: "wait", flags: None }, Cmd { path: "alpha", flags: None },
];

/// cilium-cli persistent flags (`cilium-cli/cli/cmd.go`).
const CILIUM_GLOBAL: &[&str] = &[
    "--context=",
    "-n|--namespace=",
    "--as=",
    "--as-group=",
    "--helm-release-name=",
    "--kubeconfig=",
    "-h|--help",
];

/// `cilium install` / `upgrade` flags (real-tools §2.1; cilium-cli `install.go`).
const CILIUM_INSTALL: &[&str] = &[
    "--version=",
    "--set=",
    "--helm-set=",
    "--set-string=",
    "--set-file=",
    "-f|--values=",
    "--helm-values=",
    "--wait",
    "--wait-duration=",
    "--dry-run",
    "--dry-run-helm-values",
    "--chart-directory=",
    "--repository=",
    "--datapath-mode=",
    "--nodes-without-cilium",
    "--list-versions",
    "--reset-then-reuse-values",
    "--reuse-values",
    "--reset-values",
    "-r|--restart",
    "--helm-set-file=",
    "--helm-set-string=",
];

#[rustfmt::skip]
const CILIUM: &[Cmd] = &[
    Cmd { path: "bgp", flags: None },
    Cmd { path: "clustermesh", flags: None },
    Cmd { path: "clustermesh connect", flags: Some(&["--destination-context=", "--destination-endpoint=", "--source-endpoint=", "--connection-mode=", "--parallel=", "--allow-mismatching-ca"]) },
    Cmd { path: "clustermesh disable", flags: None },
    Cmd { path: "clustermesh disconnect", flags: None },
    Cmd { path: "clustermesh enable", flags: Some(&["--service-type=", "--enable-kvstoremesh"]) },
    Cmd { path: "clustermesh status", flags: Some(&["--wait", "--wait-duration=", "-o|--output="]) },
    Cmd { path: "cmdref", flags: None },
    Cmd { path: "completion", flags: None },
    Cmd { path: "config", flags: None },
    Cmd { path: "connectivity", flags: None },
    Cmd { path: "connectivity perf", flags: None },
    Cmd { path: "connectivity test", flags: Some(&["--single-node", "--multi-cluster=", "--test=", "--test-namespace=", "--test-concurrency=", "--timeout=", "--flow-validation=", "--collect-sysdump-on-failure", "--exit-zero-on-failure", "--junit-file=", "--hubble", "--force-deploy", "--cleanup", "-v|--verbose", "-d|--debug", "-p|--print-flows"]) },
    Cmd { path: "context", flags: None },
    Cmd { path: "encrypt", flags: None },
    Cmd { path: "encrypt status", flags: Some(&["--node=", "--per-node-details", "--wait-duration=", "-o|--output="]) },
    Cmd { path: "features", flags: None },
    Cmd { path: "help", flags: None },
    Cmd { path: "hubble", flags: None },
    Cmd { path: "hubble disable", flags: None },
    Cmd { path: "hubble enable", flags: Some(&["--relay", "--ui"]) },
    Cmd { path: "hubble port-forward", flags: None },
    Cmd { path: "hubble ui", flags: None },
    Cmd { path: "install", flags: Some(CILIUM_INSTALL) },
    Cmd { path: "multicast", flags: None },
    Cmd { path: "status", flags: Some(&["--wait", "--wait-duration=", "--ignore-warnings", "-o|--output=", "--interactive", "--verbose", "--worker-count="]) },
    Cmd { path: "sysdump", flags: None },
    Cmd { path: "uninstall", flags: None },
    Cmd { path: "upgrade", flags: Some(CILIUM_INSTALL) },
    Cmd { path: "version", flags: None },
];

/// flux persistent flags (flux2 `cmd/flux/main.go`).
const FLUX_GLOBAL: &[&str] = &[
    "--context=",
    "--kubeconfig=",
    "-n|--namespace=",
    "--timeout=",
    "--verbose",
    "--cluster=",
    "--kube-api-burst=",
    "--kube-api-qps=",
    "--insecure-skip-tls-verify",
    "-s|--server=",
    "--token=",
    "--user=",
    "--certificate-authority=",
    "--as=",
    "--as-group=",
    "--as-uid=",
    "--cache-dir=",
    "--client-certificate=",
    "--client-key=",
    "--disable-compression",
    "--tls-server-name=",
    "-h|--help",
];

#[rustfmt::skip]
const FLUX: &[Cmd] = &[
    Cmd { path: "bootstrap", flags: None },
    Cmd { path: "bootstrap bitbucket-server", flags: None }, Cmd { path: "bootstrap git", flags: None },
    Cmd { path: "bootstrap gitea", flags: None }, Cmd { path: "bootstrap github", flags: None },
    Cmd { path: "bootstrap gitlab", flags: None },
    Cmd { path: "build", flags: None }, Cmd { path: "check", flags: None },
    Cmd { path: "completion", flags: None }, Cmd { path: "create", flags: None },
    Cmd { path: "debug", flags: None }, Cmd { path: "delete", flags: None }, Cmd { path: "diff", flags: None },
    Cmd { path: "envsubst", flags: None }, Cmd { path: "events", flags: None }, Cmd { path: "export", flags: None },
    Cmd { path: "get", flags: None }, Cmd { path: "help", flags: None }, Cmd { path: "install", flags: None },
    Cmd { path: "logs", flags: None }, Cmd { path: "migrate", flags: None }, Cmd { path: "pull", flags: None },
    Cmd { path: "push", flags: None }, Cmd { path: "reconcile", flags: None },
    Cmd { path: "resume", flags: None }, Cmd { path: "stats", flags: None }, Cmd { path: "suspend", flags: None },
    Cmd { path: "tag", flags: None }, Cmd { path: "trace", flags: None }, Cmd { path: "tree", flags: None },
    Cmd { path: "uninstall", flags: None }, Cmd { path: "version", flags: None },
];

#[rustfmt::skip]
const OP: &[Cmd] = &[
    Cmd { path: "account", flags: None }, Cmd { path: "completion", flags: None },
    Cmd { path: "connect", flags: None }, Cmd { path: "document", flags: None },
    Cmd { path: "events-api", flags: None }, Cmd { path: "group", flags: None },
    Cmd { path: "help", flags: None }, Cmd { path: "inject", flags: None }, Cmd { path: "item", flags: None },
    Cmd { path: "plugin", flags: None }, Cmd { path: "read", flags: None }, Cmd { path: "run", flags: None },
    Cmd { path: "service-account", flags: None }, Cmd { path: "signin", flags: None },
    Cmd { path: "signout", flags: None }, Cmd { path: "update", flags: None }, Cmd { path: "user", flags: None },
    Cmd { path: "vault", flags: None }, Cmd { path: "whoami", flags: None },
];

const OP_GLOBAL: &[&str] = &[
    "--account=",
    "--cache",
    "--config=",
    "--debug",
    "--encoding=",
    "--format=",
    "--iso-timestamps",
    "--no-color",
    "--session=",
    "--vault=",
];

#[rustfmt::skip]
const HUBBLE: &[Cmd] = &[
    Cmd { path: "completion", flags: None }, Cmd { path: "config", flags: None },
    Cmd { path: "help", flags: None }, Cmd { path: "list", flags: None },
    Cmd { path: "observe", flags: None }, Cmd { path: "record", flags: None },
    Cmd { path: "status", flags: None }, Cmd { path: "version", flags: None }, Cmd { path: "watch", flags: None },
];

const HUBBLE_GLOBAL: &[&str] = &[
    "--server=",
    "--timeout=",
    "--request-timeout=",
    "--kube-context=",
    "--kube-namespace=",
    "--kubeconfig=",
    "-P|--port-forward",
    "--port-forward-port=",
    "-o|--output=",
    "--config=",
    "-D|--debug",
    "--tls",
    "--tls-allow-insecure",
    "--tls-ca-cert-files=",
    "--tls-client-cert-file=",
    "--tls-client-key-file=",
    "--tls-server-name=",
    "--basic-auth-username=",
    "--basic-auth-password=",
];

const TALOSCTL_GLOBAL: &[&str] = &[
    "--talosconfig=",
    "--context=",
    "-n|--nodes=",
    "-e|--endpoints=",
    "--cluster=",
    "--siderov1-keys-dir=",
    "-h|--help",
];

const HELM_GLOBAL: &[&str] = &[
    "--burst-limit=",
    "--debug",
    "--kube-apiserver=",
    "--kube-as-group=",
    "--kube-as-user=",
    "--kube-ca-file=",
    "--kube-context=",
    "--kube-insecure-skip-tls-verify",
    "--kube-tls-server-name=",
    "--kube-token=",
    "--kubeconfig=",
    "-n|--namespace=",
    "--qps=",
    "--registry-config=",
    "--repository-cache=",
    "--repository-config=",
    "-h|--help",
];

/// talosctl aliases (siderolabs/talos v1.11.5 `cmd/talosctl`, the commands' `Aliases`).
const TALOSCTL_ALIASES: &[(&str, &str)] = &[
    ("apply", "apply-config"),
    ("cg", "cgroups"),
    ("c", "containers"),
    ("cp", "copy"),
    ("g", "get"),
    ("images", "image"),
    ("ls", "list"),
    ("m", "memory"),
    ("free", "memory"),
    ("mount", "mounts"),
    ("ss", "netstat"),
    ("tcpdump", "pcap"),
    ("p", "processes"),
    ("ps", "processes"),
    ("cat", "read"),
    ("route", "routes"),
    ("services", "service"),
    ("du", "usage"),
    ("config endpoints", "config endpoint"),
    ("config nodes", "config node"),
    ("config use-context", "config context"),
    ("config get-contexts", "config contexts"),
];

/// helm aliases (helm v3 commands' `Aliases`).
const HELM_ALIASES: &[(&str, &str)] = &[
    ("ls", "list"),
    ("un", "uninstall"),
    ("del", "uninstall"),
    ("delete", "uninstall"),
    ("hist", "history"),
    ("inspect", "show"),
    ("dep", "dependency"),
    ("dependencies", "dependency"),
    ("repo ls", "repo list"),
    ("repo rm", "repo remove"),
    ("plugin ls", "plugin list"),
];

const CILIUM_ALIASES: &[(&str, &str)] = &[("encryption", "encrypt")];

pub const TOOLS: &[Tool] = &[
    Tool {
        name: "talosctl",
        commands: talosctl::COMMANDS,
        aliases: TALOSCTL_ALIASES,
        global: TALOSCTL_GLOBAL,
        open_groups: &[],
    },
    Tool {
        name: "helm",
        commands: helm::COMMANDS,
        aliases: HELM_ALIASES,
        global: HELM_GLOBAL,
        open_groups: &[],
    },
    Tool {
        name: "cilium",
        commands: CILIUM,
        aliases: CILIUM_ALIASES,
        global: CILIUM_GLOBAL,
        open_groups: &[
            "bgp",
            "clustermesh",
            "config",
            "encrypt",
            "features",
            "multicast",
            "context",
            "cmdref",
            "completion",
            "help",
            "sysdump",
        ],
    },
    Tool {
        name: "flux",
        commands: FLUX,
        aliases: &[],
        global: FLUX_GLOBAL,
        open_groups: &[
            "build",
            "create",
            "debug",
            "delete",
            "diff",
            "export",
            "get",
            "logs",
            "migrate",
            "pull",
            "push",
            "reconcile",
            "resume",
            "stats",
            "suspend",
            "tag",
            "trace",
            "tree",
            "events",
            "completion",
            "help",
        ],
    },
    Tool {
        name: "kubectl",
        commands: KUBECTL,
        aliases: &[],
        global: KUBECTL_GLOBAL,
        open_groups: &[
            "auth",
            "certificate",
            "create",
            "set",
            "top",
            "plugin",
            "alpha",
            "completion",
            "apply",
            "debug",
        ],
    },
    Tool {
        name: "op",
        commands: OP,
        aliases: &[],
        global: OP_GLOBAL,
        open_groups: &[
            "account",
            "connect",
            "document",
            "events-api",
            "group",
            "item",
            "plugin",
            "service-account",
            "user",
            "vault",
            "completion",
            "help",
        ],
    },
    Tool {
        name: "hubble",
        commands: HUBBLE,
        aliases: &[],
        global: HUBBLE_GLOBAL,
        open_groups: &["config", "list", "watch", "record", "completion", "help"],
    },
];

pub fn tool(name: &str) -> Option<&'static Tool> {
    TOOLS.iter().find(|t| t.name == name)
}

/// Does the flag spec (`-o|--output=`) name `flag` (`--output`, `-o`)? Returns whether it takes a value.
fn spec_matches(spec: &str, flag: &str) -> Option<bool> {
    let valued = spec.ends_with('=');
    let names = spec.trim_end_matches('=');
    names.split('|').any(|n| n == flag).then_some(valued)
}

impl Tool {
    fn find(&self, path: &str) -> Option<&'static Cmd> {
        let canonical = self
            .aliases
            .iter()
            .find(|(a, _)| *a == path)
            .map(|(_, c)| *c)
            .unwrap_or(path);
        self.commands.iter().find(|c| c.path == canonical)
    }

    fn canonical(&self, path: &str) -> String {
        self.aliases
            .iter()
            .find(|(a, _)| *a == path)
            .map(|(_, c)| c.to_string())
            .unwrap_or_else(|| path.to_string())
    }

    fn children(&self, parent: &str) -> Vec<&'static str> {
        let prefix = if parent.is_empty() {
            String::new()
        } else {
            format!("{parent} ")
        };
        self.commands
            .iter()
            .filter_map(|c| c.path.strip_prefix(prefix.as_str()))
            .filter(|rest| !rest.contains(' ') && !rest.is_empty())
            .collect()
    }

    /// Whether `flag` takes a value, as far as any command of the tool knows (for finding the
    /// command words among the arguments before the command is known).
    pub fn takes_value(&self, flag: &str) -> bool {
        self.global
            .iter()
            .chain(
                self.commands
                    .iter()
                    .flat_map(|c| c.flags.unwrap_or(&[]).iter()),
            )
            .find_map(|s| spec_matches(s, flag))
            .unwrap_or(false)
    }

    /// Whether any command of the tool has this flag.
    fn knows(&self, flag: &str) -> bool {
        self.global
            .iter()
            .chain(
                self.commands
                    .iter()
                    .flat_map(|c| c.flags.unwrap_or(&[]).iter()),
            )
            .any(|s| spec_matches(s, flag).is_some())
    }

    /// Check an argv (argv[0] is the tool).
    pub fn check(&self, argv: &[String]) -> Vec<Problem> {
        let mut problems = Vec::new();
        // Pass 1: the command path.
        let mut path = String::new();
        let mut i = 1;
        let mut descending = true;
        let mut flags: Vec<&str> = Vec::new();
        while i < argv.len() {
            let a = argv[i].as_str();
            if a == "--" {
                break;
            }
            if a.starts_with('-') && a.len() > 1 {
                let name = a.split_once('=').map(|(k, _)| k).unwrap_or(a);
                flags.push(name);
                if !a.contains('=') && self.takes_value(name) {
                    i += 1;
                } else if !a.contains('=') && !self.knows(name) {
                    // A flag no command has: if the next word is not a command here, it is
                    // probably this flag's value.
                    let next = argv.get(i + 1).map(String::as_str).unwrap_or("");
                    let as_cmd = if path.is_empty() {
                        next.to_string()
                    } else {
                        format!("{path} {next}")
                    };
                    if !next.starts_with('-') && self.find(&as_cmd).is_none() {
                        i += 1;
                    }
                }
                i += 1;
                continue;
            }
            if descending {
                let next = if path.is_empty() {
                    a.to_string()
                } else {
                    format!("{path} {a}")
                };
                if self.find(&next).is_some() {
                    path = self.canonical(&next);
                } else if self.children(&path).is_empty()
                    || self.open_groups.contains(&path.as_str())
                    || a.contains("{{")
                {
                    descending = false;
                } else {
                    let kids = self.children(&path);
                    problems.push(Problem::UnknownCommand {
                        parent: path.clone(),
                        word: a.to_string(),
                        suggestion: nearest(a, kids.iter().copied()),
                    });
                    return problems;
                }
            }
            i += 1;
        }
        // Pass 2: every flag against the command's flags (when listed).
        let Some(cmd) = self.find(&path) else {
            return problems;
        };
        let Some(known) = cmd.flags else {
            return problems;
        };
        for f in flags {
            // Short flags bundled (`-it`) and numeric values (`-1`) are left alone.
            if !f.starts_with("--") && f.len() > 2
                || f.chars().nth(1).is_some_and(|c| c.is_ascii_digit())
            {
                continue;
            }
            let ok = known
                .iter()
                .chain(self.global.iter())
                .any(|s| spec_matches(s, f).is_some());
            if !ok {
                let names = known
                    .iter()
                    .flat_map(|s| s.trim_end_matches('=').split('|'))
                    .filter(|n| n.starts_with("--"));
                problems.push(Problem::UnknownFlag {
                    command: if path.is_empty() {
                        self.name.to_string()
                    } else {
                        format!("{} {path}", self.name)
                    },
                    flag: f.to_string(),
                    suggestion: nearest(f, names),
                });
            }
        }
        problems
    }
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    candidates
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn real_commands_pass_and_invented_ones_do_not() {
        let cilium = tool("cilium").unwrap();
        assert!(
            cilium
                .check(&argv("cilium status --wait --context admin@infra"))
                .is_empty()
        );
        let p = cilium.check(&argv(
            "cilium service list --context admin@infra --clustermesh-affinity",
        ));
        assert!(
            matches!(&p[..], [Problem::UnknownCommand { word, .. }] if word == "service"),
            "{p:?}"
        );
        let talosctl = tool("talosctl").unwrap();
        assert!(
            talosctl
                .check(&argv("talosctl -n 10.0.0.1 etcd members"))
                .is_empty()
        );
        assert!(
            talosctl
                .check(&argv("talosctl apply --insecure -n 1 --file x"))
                .is_empty()
        );
        let p = talosctl.check(&argv("talosctl etcdctl member list"));
        assert!(matches!(&p[..], [Problem::UnknownCommand { .. }]), "{p:?}");
        let p = talosctl.check(&argv("talosctl gen config a https://a:6443 --output-dir x"));
        assert!(
            matches!(&p[..], [Problem::UnknownFlag { flag, .. }] if flag == "--output-dir"),
            "{p:?}"
        );
        let helm = tool("helm").unwrap();
        assert!(
            helm.check(&argv(
                "helm upgrade --install cilium cilium/cilium --wait --dry-run -n kube-system"
            ))
            .is_empty()
        );
    }
}
