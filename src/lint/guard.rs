//! Checks that guard: a step's check decides whether its action runs, and a check that passes
//! skips the verify too. So a check must prove at least what the verify proves. Where lint can see
//! the difference (a check that reads a record, such as `helm status` or a file, against a verify
//! that watches the cluster's real state), it warns.

use super::Finding;
use super::context::Ctx;
use crate::spec::phase::ActionSpec;

const RULE: &str = "check-strength";

fn kind(a: &ActionSpec) -> &'static str {
    match a {
        ActionSpec::Cmd(_) => "a command",
        ActionSpec::Shell(_) => "a shell script",
        ActionSpec::Json(_) => "a field of a command's JSON",
        ActionSpec::Nodes(_) => "the nodes",
        ActionSpec::Rollout(_) => "a rollout",
        ActionSpec::Condition(_) => "a condition",
        ActionSpec::Exists(_) => "an object's existence",
        ActionSpec::Absent(_) => "an object's absence",
        ActionSpec::Crd(_) => "a CRD",
        ActionSpec::Field(_) => "a field of an object",
        ActionSpec::Kustomizations(_) => "Flux Kustomizations",
        ActionSpec::Helmreleases(_) => "Flux HelmReleases",
        ActionSpec::HelmValues(_) => "a release's values against its HelmRelease",
        ActionSpec::Manual(_) => "nothing (a manual item)",
        ActionSpec::Flow(_) => "a network flow (a probe pod)",
    }
}

/// How much a check proves about the cluster: a watched state beats existence beats a record.
fn strength(a: &ActionSpec) -> u8 {
    match a {
        ActionSpec::Rollout(_)
        | ActionSpec::Nodes(_)
        | ActionSpec::Condition(_)
        | ActionSpec::Field(_)
        | ActionSpec::Flow(_) => 3,
        // `ready: false` only asks that they exist.
        ActionSpec::Kustomizations(c) | ActionSpec::Helmreleases(c) => {
            if c.ready {
                3
            } else {
                2
            }
        }
        ActionSpec::Crd(_) | ActionSpec::Exists(_) | ActionSpec::Absent(_) => 2,
        ActionSpec::Cmd(_)
        | ActionSpec::Shell(_)
        | ActionSpec::Json(_)
        | ActionSpec::HelmValues(_) => 1,
        ActionSpec::Manual(_) => 0,
    }
}

pub(super) fn findings(cx: &Ctx) -> Vec<Finding> {
    let mut out = Vec::new();
    for (_, u) in cx.units() {
        let (Some(check), Some(verify)) = (&u.check, &u.verify) else {
            continue;
        };
        // Commands can prove anything lint cannot read; only a kube verify gives a yardstick.
        if !crate::checks::is_kube(verify) || strength(check) >= strength(verify) {
            continue;
        }
        let (line, col) = cx.locate(u, &["check:"]);
        out.push(Finding::warning(
            RULE,
            crate::error::UserError::new(format!(
                "step {:?}: its check reads {} while its verify watches {}: when the check passes, the action and the verify are skipped, so a record that outlived the real state (a `deployed` release whose DaemonSet is gone) is taken for done",
                u.step,
                kind(check),
                kind(verify)
            ))
            .in_file(&u.file)
            .at(line, col)
            .field(format!("steps.{}.check", u.step))
            .help("make the check prove what the verify proves (for an idempotent action, check = verify)")
            .with_source_line(),
        ));
    }
    out
}
