//! The preflight's version check: the tools on PATH that the steps run are the versions the plan
//! says (`versions`): talosctl the same Talos minor as `versions.talos`, flux the same minor as
//! `versions.flux`, kubectl within one minor of `versions.kubernetes` (the supported skew).
//!
//! Owns asking the tools their version (`--client`, with a short timeout) and comparing. Lab plans
//! are not checked: their tools are the lab's stand-ins.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::dag::Dag;
use crate::error::UserError;
use crate::spec::load::Spec;

use super::context::{actions, argv_of};

/// (major, minor) of the first `v1.2.3`-like version in `text`.
pub fn minor_of(text: &str) -> Option<(u64, u64)> {
    let re = regex::Regex::new(r"v?(\d+)\.(\d+)(?:\.\d+)?").expect("static regex");
    let c = re.captures(text)?;
    Some((c[1].parse().ok()?, c[2].parse().ok()?))
}

/// What `tool args` prints (stdout and stderr), if it ends within 5 s.
fn ask(tool: &str, args: &[&str]) -> Option<String> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    Some(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Version mismatches of the tools the units in `order` run.
pub fn findings(spec: &Spec, dag: &Dag, order: &[usize]) -> Vec<UserError> {
    if spec.plan.lab {
        return Vec::new();
    }
    let used: BTreeSet<String> = order
        .iter()
        .flat_map(|&i| actions(&dag.work[i]))
        .filter_map(|a| argv_of(a).and_then(|v| v.first().cloned()))
        .collect();
    let v = &spec.plan.versions;
    // tool, how to ask, plan field, plan version, allowed minor skew
    let rules: [(&str, &[&str], &str, &str, u64); 3] = [
        (
            "talosctl",
            &["version", "--client"],
            "versions.talos",
            &v.talos,
            0,
        ),
        (
            "flux",
            &["version", "--client"],
            "versions.flux",
            &v.flux,
            0,
        ),
        (
            "kubectl",
            &["version", "--client"],
            "versions.kubernetes",
            &v.kubernetes,
            1,
        ),
    ];
    let mut out = Vec::new();
    for (tool, args, field, want, skew) in rules {
        if !used.contains(tool) {
            continue;
        }
        let (Some(want_mm), Some(said)) = (minor_of(want), ask(tool, args)) else {
            continue; // not on PATH is the presence check's finding
        };
        let Some(have) = minor_of(&said) else {
            continue;
        };
        if have.0 != want_mm.0 || have.1.abs_diff(want_mm.1) > skew {
            out.push(
                UserError::new(format!(
                    "{tool} on PATH is {}.{}, but the plan says {field}: {want}",
                    have.0, have.1
                ))
                .in_file(&spec.plan_file)
                .field(field)
                .help(if skew == 0 {
                    format!(
                        "install {tool} {}.{}.x, or change {field}",
                        want_mm.0, want_mm.1
                    )
                } else {
                    format!(
                        "install a {tool} within {skew} minor version of {}.{}, or change {field}",
                        want_mm.0, want_mm.1
                    )
                }),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::minor_of;

    #[test]
    fn reads_the_first_version_of_each_tools_output() {
        assert_eq!(minor_of("Client:\n\tTag:         v1.11.5\n"), Some((1, 11)));
        assert_eq!(minor_of("flux: v2.7.3"), Some((2, 7)));
        assert_eq!(
            minor_of("Client Version: v1.34.2\nKustomize Version: v5.7.1"),
            Some((1, 34))
        );
        assert_eq!(minor_of("no version here"), None);
    }
}
