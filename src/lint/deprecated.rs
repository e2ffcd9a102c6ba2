//! Deprecated forms, as warnings: they work today and stop working on an upgrade, or do not do
//! what they say. Each entry names its source.

use crate::spec::phase::ActionSpec;

use super::context::{Ctx, commands, roles};
use super::{Finding, helm};

const RULE: &str = "deprecated";

/// (old, new, why): strings that may appear in annotations, labels, apiVersions or arguments.
const FORMS: &[(&str, &str, &str)] = &[
    // platform-components §2.4, §18.9; cilium/cilium pkg/annotation/k8s.go (legacy aliases).
    (
        "io.cilium/global-service",
        "service.cilium.io/global",
        "the legacy alias of the global-service annotation",
    ),
    (
        "io.cilium/shared-service",
        "service.cilium.io/shared",
        "the legacy alias of the shared-service annotation",
    ),
    (
        "io.cilium/service-affinity",
        "service.cilium.io/affinity",
        "the legacy alias of the service-affinity annotation",
    ),
    // platform-components §18.8: not a Cilium feature.
    (
        "cilium.io/policy-enforcement",
        "policyEnforcementMode in the Cilium values",
        "no Cilium component reads this label",
    ),
    // platform-components §1.1, §18.13: Flux's v1 APIs replace the betas.
    (
        "source.toolkit.fluxcd.io/v1beta2",
        "source.toolkit.fluxcd.io/v1",
        "Flux 2.x serves sources at v1; v1beta2 is deprecated",
    ),
    (
        "source.toolkit.fluxcd.io/v1beta1",
        "source.toolkit.fluxcd.io/v1",
        "removed from Flux",
    ),
    (
        "kustomize.toolkit.fluxcd.io/v1beta2",
        "kustomize.toolkit.fluxcd.io/v1",
        "Flux 2.x serves Kustomizations at v1; v1beta2 is deprecated",
    ),
    (
        "kustomize.toolkit.fluxcd.io/v1beta1",
        "kustomize.toolkit.fluxcd.io/v1",
        "removed from Flux",
    ),
    (
        "helm.toolkit.fluxcd.io/v2beta1",
        "helm.toolkit.fluxcd.io/v2",
        "Flux 2.3+ serves HelmReleases at v2; v2beta1 is deprecated",
    ),
    (
        "helm.toolkit.fluxcd.io/v2beta2",
        "helm.toolkit.fluxcd.io/v2",
        "Flux 2.3+ serves HelmReleases at v2; v2beta2 is deprecated",
    ),
];

/// Cilium chart values the 1.18.4 chart marks deprecated (its values.yaml comments), and
/// platform-components §2.4/§2.5.
const CHART_VALUES: &[(&str, &str, &str)] = &[
    (
        "clustermesh.enableMCSAPISupport",
        "clustermesh.mcsapi.enabled",
        "deprecated, removed in Cilium 1.20",
    ),
    (
        "clustermesh.apiserver.kvstoremesh.enabled",
        "(nothing: KVStoreMesh is always on)",
        "deprecated: KVStoreMesh will always be enabled",
    ),
    (
        "localRedirectPolicy",
        "localRedirectPolicies.enabled",
        "deprecated in the chart",
    ),
    (
        "tls.secretsBackend",
        "tls.readSecretsOnlyFromSecretsNamespace",
        "deprecated in the chart",
    ),
    (
        "hubble.redact.kafka.apiKey",
        "(nothing)",
        "deprecated, removed in Cilium 1.19",
    ),
];

fn strings_of(a: &ActionSpec) -> Vec<String> {
    match a {
        ActionSpec::Condition(c) => vec![c.api_version.clone()],
        ActionSpec::Field(c) => vec![c.api_version.clone()],
        ActionSpec::Exists(c) | ActionSpec::Absent(c) => {
            let mut v = vec![c.api_version.clone()];
            v.extend(c.annotations.keys().cloned());
            v.extend(c.labels.keys().cloned());
            v
        }
        _ => commands(a).into_iter().flat_map(|c| c.argv).collect(),
    }
}

pub(super) fn findings(cx: &Ctx) -> Vec<Finding> {
    let mut out = Vec::new();
    let flux_managed = cx.units().any(|(_, u)| {
        commands(&u.run)
            .iter()
            .any(|c| c.tool() == "flux" && c.argv.get(1).is_some_and(|s| s == "bootstrap"))
    });
    for w in &cx.dag.work {
        let crate::dag::Work::Gate(g) = w else {
            continue;
        };
        for item in &g.items {
            let strings = strings_of(&item.check);
            for (old, new, why) in FORMS {
                if strings.iter().any(|s| s.contains(old)) {
                    let (file, line, col) = cx.gate_item_at(&g.phase, &item.id);
                    let base = item.id.split('/').next().unwrap_or(&item.id);
                    out.push(Finding::warning(
                        RULE,
                        crate::error::UserError::new(format!("{old} is deprecated: {why}"))
                            .in_file(file)
                            .at(line, col)
                            .field(format!("gate.{base}.check"))
                            .help(format!("use {new}"))
                            .with_source_line(),
                    ));
                }
            }
        }
    }
    for (i, u) in cx.units() {
        for (role, a) in roles(&cx.dag.work[i]) {
            let strings = strings_of(a);
            for (old, new, why) in FORMS {
                if strings.iter().any(|s| s.contains(old)) {
                    out.push(Finding::warning(
                        RULE,
                        cx.on_step(
                            u,
                            role.field(),
                            &[old],
                            format!("{old} is deprecated: {why}"),
                        )
                        .help(format!("use {new}")),
                    ));
                }
            }
            for c in commands(a) {
                if helm::is_cilium_chart(&c.argv) {
                    for (key, _) in helm::set_values(&c.argv, &["--set", "--set-string"]) {
                        if let Some((old, new, why)) =
                            CHART_VALUES.iter().find(|(k, _, _)| *k == key)
                        {
                            out.push(Finding::warning(
                                RULE,
                                cx.on_step(
                                    u,
                                    role.field(),
                                    &[old],
                                    format!("the Cilium value {old} is {why}"),
                                )
                                .help(format!("use {new}")),
                            ));
                        }
                    }
                    for chart in c
                        .argv
                        .iter()
                        .filter(|a| a.starts_with("oci://") && a.contains("cilium"))
                    {
                        let version = cx
                            .spec
                            .plan
                            .versions
                            .charts
                            .get("cilium")
                            .cloned()
                            .unwrap_or_default();
                        let minor: Option<u32> = version
                            .trim_start_matches('v')
                            .split('.')
                            .nth(1)
                            .and_then(|m| m.parse().ok());
                        if minor.is_some_and(|m| m < 19) {
                            out.push(Finding::warning(
                                RULE,
                                cx.on_step(u, role.field(), &["oci://"], format!("{chart} publishes Cilium charts only from 1.19 (January 2026); {version} may not exist there"))
                                    .help("use the Helm repository: --repo https://helm.cilium.io cilium"),
                            ));
                        }
                    }
                }
                // platform-components §2.5, §18.12: a Helm upgrade behind Flux's back.
                if flux_managed
                    && c.tool() == "cilium"
                    && c.argv.get(1).is_some_and(|s| s == "clustermesh")
                    && c.argv
                        .get(2)
                        .is_some_and(|s| s == "enable" || s == "connect")
                {
                    out.push(Finding::warning(
                        RULE,
                        cx.on_step(
                            u,
                            role.field(),
                            &["clustermesh"],
                            format!(
                                "cilium clustermesh {} runs helm upgrade on the Cilium release, and Flux's next upgrade of its HelmRelease reverts it",
                                c.argv[2]
                            ),
                        )
                        .help("declare clustermesh.useAPIServer, clustermesh.config.{enabled,clusters} and a shared tls.ca in the HelmRelease values; check with cilium clustermesh status --wait"),
                    ));
                }
            }
        }
    }
    out
}
