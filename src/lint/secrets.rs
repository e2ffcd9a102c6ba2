//! Secrets: the plan holds references only; no step prints generated secret material (a Talos secrets
//! bundle, machine configs, talosconfig, kubeconfig, a Secret's data, an `op read`) to its output,
//! which the engine logs; no literal credential is written in a plan or phase file. And no finding
//! ever echoes a secret: every quoted line passes through [`mask_error`].

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use crate::error::UserError;
use crate::spec::load::Spec;
use crate::spec::plan::Plan;

use super::context::{Ctx, commands, flag_values, has_flag, positionals, roles};
use super::{Finding, at};

const RULE: &str = "secrets";

/// Credentials with a recognisable shape (GitHub, GitLab, Slack, AWS, 1Password service accounts,
/// PEM private keys). Sources: GitHub "About authentication" token prefixes (ghp_, gho_, ghu_, ghs_,
/// ghr_, github_pat_); GitLab "Personal access tokens" (glpat-); 1Password "Service accounts" (ops_).
static TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_\-]{20,}|xox[abprs]-[A-Za-z0-9\-]{10,}|AKIA[0-9A-Z]{16}|ops_[A-Za-z0-9+/=_\-]{20,}|-----BEGIN [A-Z ]*PRIVATE KEY-----)",
    )
    .expect("static regex")
});

/// Environment names that carry credentials.
fn secretish_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    // A path to a secret, or a switch, is not the secret.
    if ["_FILE", "_PATH", "_DIR", "_NAME", "_ENABLED", "_AUTH"]
        .iter()
        .any(|s| n.ends_with(s))
    {
        return false;
    }
    [
        "TOKEN",
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "API_KEY",
        "PRIVATE_KEY",
        "CREDENTIAL",
    ]
    .iter()
    .any(|w| n.contains(w))
}

fn is_templated_or_reference(v: &str) -> bool {
    let t = v.trim();
    v.contains("{{")
        || crate::secrets::is_reference(v)
        || t.is_empty()
        || t.starts_with('$')
        || matches!(t, "true" | "false")
        || t.parse::<f64>().is_ok()
}

/// The masked form of a literal: never its value, never its length.
fn masked(literal: &str) -> String {
    match TOKEN.find(literal) {
        Some(m) if m.start() == 0 => {
            let prefix: String = literal
                .chars()
                .take_while(|c| *c != '_' && *c != '-')
                .chain(literal.chars().find(|c| *c == '_' || *c == '-'))
                .take(11)
                .collect();
            format!("{prefix}****")
        }
        _ => "****".to_string(),
    }
}

/// Mask `literals` and anything shaped like a credential in a finding's message, help and snippet.
pub fn mask_error(e: &mut UserError, literals: &[String]) {
    e.message = mask_text(&e.message, literals);
    e.help = e.help.as_deref().map(|h| mask_text(h, literals));
    e.snippet = e.snippet.as_deref().map(|s| mask_text(s, literals));
}

fn mask_text(s: &str, literals: &[String]) -> String {
    let mut out = s.to_string();
    for l in literals {
        if out.contains(l.as_str()) {
            out = out.replace(l.as_str(), &masked(l));
        }
    }
    TOKEN
        .replace_all(&out, |c: &regex::Captures| masked(&c[0]))
        .into_owned()
}

/// Every literal the inputs hold where a reference belongs (plan secrets, credential-named
/// environment values): what findings must never quote.
pub fn literals(spec: &Spec) -> Vec<String> {
    let mut out: Vec<String> = spec
        .plan
        .secrets
        .values()
        .map(|v| v.value.trim().to_string())
        .filter(|v| v.len() >= 4 && !crate::secrets::is_reference(v))
        .collect();
    for p in &spec.phases {
        for s in &p.phase.steps {
            for (k, v) in &s.env {
                if secretish_name(k) && !is_templated_or_reference(v) && v.trim().len() >= 4 {
                    out.push(v.trim().to_string());
                }
            }
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// Secrets must be `op://vault/item/field` references (also enforced when a plan is loaded). The
/// quoted line shows the field, never the value.
pub fn secret_findings(plan: &Plan, file: &Path) -> Vec<UserError> {
    let mut out = Vec::new();
    for (name, value) in &plan.secrets {
        if !crate::secrets::is_reference(&value.value) {
            let mut e = at(
                UserError::new("a secret must be a 1Password reference, not a literal value")
                    .field(format!("secrets.{name}"))
                    .help("store the value in 1Password and write its reference, e.g. op://vault/item/field"),
                file,
                value,
            );
            let v = value.value.trim();
            if !v.is_empty() {
                mask_error(&mut e, &[v.to_string()]);
            }
            out.push(e);
        }
    }
    out
}

/// Files whose content is secret material: a Talos secrets bundle, machine configs (they embed the
/// cluster CA key and join token), talosconfig and kubeconfig (client keys), private keys.
fn secret_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    name.contains("secret")
        || name.ends_with(".talosconfig")
        || name == "talosconfig"
        || name == "kubeconfig"
        || name.ends_with(".kubeconfig")
        || name == "controlplane.yaml"
        || name == "worker.yaml"
        || name.ends_with(".key")
        || name == "identity"
        || name.ends_with("id_rsa")
        || name.ends_with("id_ed25519")
}

const READERS: &[&str] = &[
    "cat", "head", "tail", "less", "more", "bat", "base64", "xxd", "od", "strings", "tac",
];

/// Why a simple command prints secret material, if it does.
fn prints_secret(argv: &[String]) -> Option<(String, &'static str)> {
    let tool = argv.first()?.rsplit('/').next()?;
    let valued_none = |_: &str| false;
    let is_stdout = |v: &str| v == "-" || v == "/dev/stdout" || v == "/dev/fd/1";
    match tool {
        "talosctl" => {
            let pos = positionals(argv, &|f| {
                matches!(
                    f,
                    "-o" | "--output"
                        | "--output-file"
                        | "-n"
                        | "--nodes"
                        | "-e"
                        | "--endpoints"
                        | "--talosconfig"
                        | "--context"
                        | "--with-secrets"
                        | "-t"
                        | "--output-types"
                        | "--config-patch"
                        | "--kubernetes-version"
                        | "--talos-version"
                        | "--install-disk"
                        | "--install-image"
                )
            });
            if pos.starts_with(&["gen", "secrets"])
                && flag_values(argv, &["-o", "--output-file"])
                    .iter()
                    .any(|v| is_stdout(v))
            {
                return Some((
                    "talosctl gen secrets -o -".into(),
                    "write the bundle to a file in the state directory (-o {{ paths.talos_configs }}/{{ cluster.name }}/secrets.yaml) and store it with op",
                ));
            }
            if pos.starts_with(&["gen", "config"])
                && flag_values(argv, &["-o", "--output"])
                    .iter()
                    .any(|v| is_stdout(v))
            {
                return Some((
                    "talosctl gen config -o - (machine configs embed the cluster CA key and join token)".into(),
                    "write the configs to files in the state directory with -o",
                ));
            }
            if pos.first() == Some(&"kubeconfig") && pos.get(1).is_some_and(|p| is_stdout(p)) {
                return Some((
                    "talosctl kubeconfig - (the admin client key)".into(),
                    "merge it into the plan's kubeconfig file: talosctl kubeconfig {{ paths.kubeconfig }} --force",
                ));
            }
            None
        }
        "op" => {
            let pos = positionals(argv, &|f| {
                matches!(
                    f,
                    "--vault"
                        | "--account"
                        | "--format"
                        | "--fields"
                        | "-o"
                        | "--out-file"
                        | "--session"
                        | "--config"
                )
            });
            if pos.first() == Some(&"read") && flag_values(argv, &["-o", "--out-file"]).is_empty() {
                return Some((
                    "op read prints the secret's value".into(),
                    "pass the reference in env: (the engine resolves op:// references and redacts them), or write it to a file with op read --out-file",
                ));
            }
            if pos.starts_with(&["item", "get"]) && has_flag(argv, &["--reveal"]) {
                return Some((
                    "op item get --reveal prints concealed fields".into(),
                    "drop --reveal; to test that the item exists, op item get --format json is enough",
                ));
            }
            None
        }
        "kubectl" => {
            let pos = positionals(argv, &|f| {
                matches!(
                    f,
                    "-n" | "--namespace"
                        | "--context"
                        | "-o"
                        | "--output"
                        | "--kubeconfig"
                        | "-l"
                        | "--selector"
                        | "--field-selector"
                )
            });
            let getting_secret = pos.first() == Some(&"get")
                && pos.get(1).is_some_and(|k| {
                    k.split([',', '/'])
                        .any(|k| matches!(k, "secret" | "secrets"))
                });
            let out = flag_values(argv, &["-o", "--output"]);
            if getting_secret
                && out.iter().any(|o| {
                    o.starts_with("yaml") || o.starts_with("json") || o.starts_with("go-template")
                })
            {
                return Some((
                    "kubectl get secret -o yaml/json prints the Secret's data".into(),
                    "check that the Secret exists with an exists: check (it never reads data), or print only its name (-o name)",
                ));
            }
            None
        }
        "flux" => {
            let pos = positionals(argv, &valued_none);
            if pos.starts_with(&["create", "secret"]) && has_flag(argv, &["--export"]) {
                return Some((
                    "flux create secret --export prints the Secret".into(),
                    "create it in the cluster (without --export), or write the export to a file that is encrypted with SOPS",
                ));
            }
            None
        }
        t if READERS.contains(&t) => {
            let file = argv[1..]
                .iter()
                .filter(|a| !a.starts_with('-'))
                .find(|a| secret_file(a))?;
            Some((
                format!("{t} {file} prints secret material"),
                "test the file with test -s, or hand it to the tool that needs it; never print it into the step's log",
            ))
        }
        _ => None,
    }
}

/// Steps that print secret material, and literal credentials in phase and plan files.
pub fn step_findings(cx: &Ctx) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut lines_reported = std::collections::HashSet::new();
    for (i, u) in cx.units() {
        let w = &cx.dag.work[i];
        for (role, a) in roles(w) {
            for c in commands(a) {
                if !c.prints() {
                    continue;
                }
                let Some((what, fix)) = prints_secret(&c.argv) else {
                    continue;
                };
                if !seen.insert((u.step.clone(), role.field(), what.clone())) {
                    continue;
                }
                let needle = c.argv.get(1).map(String::as_str).unwrap_or("");
                out.push(Finding::error(
                    RULE,
                    cx.on_step(
                        u,
                        role.field(),
                        &[needle, c.tool()],
                        format!(
                            "step {:?} prints secret material to its output, which is logged: {what}",
                            u.step
                        ),
                    )
                    .help(fix),
                ));
            }
        }
    }
    for e in env_literal_findings(cx.spec) {
        lines_reported.insert((e.file.clone().unwrap_or_default(), e.line.unwrap_or(0)));
        out.push(Finding::error(RULE, e));
    }
    // Credential-shaped literals anywhere in the files (plan secrets have their own finding).
    let mut files: Vec<(&Path, &str)> = vec![(&cx.spec.plan_file, &cx.spec.plan_text)];
    files.extend(
        cx.spec
            .phases
            .iter()
            .map(|p| (p.file.as_path(), p.text.as_str())),
    );
    for (file, text) in files {
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with('#') {
                continue;
            }
            let Some(m) = TOKEN.find(line) else { continue };
            let field = crate::spec::load::yaml_path_at(text, n + 1, m.start() + 1);
            if file == cx.spec.plan_file
                && field.as_deref().is_some_and(|f| f.starts_with("secrets."))
            {
                continue;
            }
            if lines_reported.contains(&(file.to_path_buf(), n as u64 + 1)) {
                continue;
            }
            let mut e = UserError::new("a literal credential is written in the file")
                .in_file(file)
                .at(n as u64 + 1, m.start() as u64 + 1)
                .help("revoke it, store it in 1Password, and write its reference (op://vault/item/field) in the plan's secrets")
                .with_source_line();
            if let Some(f) = field {
                e = e.field(f);
            }
            out.push(Finding::error(RULE, e));
        }
    }
    out
}

/// Credential-named environment variables written as literals in phase files (also enforced when
/// the workspace is loaded, so that `plan` and `run` never print or pass them). The quoted line is
/// masked.
pub fn env_literal_findings(spec: &Spec) -> Vec<UserError> {
    let mut out = Vec::new();
    for p in &spec.phases {
        for s in &p.phase.steps {
            for (k, v) in &s.env {
                if !secretish_name(k) || is_templated_or_reference(v) {
                    continue;
                }
                let (line, col) =
                    super::context::locate_plain(&p.text, s.id.referenced.line(), &format!("{k}:"));
                let mut e = UserError::new(format!(
                    "environment variable {k} holds a literal value, not a reference"
                ))
                .in_file(&p.file)
                .at(line, col)
                .field(format!("steps.{}.env.{k}", s.id.value))
                .help("write a reference: \"{{ secrets.<name> }}\" with the plan's secrets.<name>: op://vault/item/field")
                .with_source_line();
                mask_error(&mut e, &[v.trim().to_string()]);
                out.push(e);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_keeps_no_part_of_a_secret() {
        let mut e = UserError::new("x ghp_abcdefghijklmnopqrstuvwxyz0123456789 y hunter22");
        e.snippet = Some("  token: hunter22".into());
        mask_error(&mut e, &["hunter22".to_string()]);
        assert!(!e.message.contains("abcdefghij"), "{}", e.message);
        assert!(e.message.contains("ghp_****"), "{}", e.message);
        assert!(!e.snippet.as_deref().unwrap_or("").contains("hunter22"));
    }

    #[test]
    fn secret_names_and_values() {
        assert!(secretish_name("GITHUB_TOKEN"));
        assert!(!secretish_name("GITHUB_TOKEN_FILE"));
        assert!(is_templated_or_reference("{{ secrets.github_token }}"));
        assert!(is_templated_or_reference("true"));
        assert!(!is_templated_or_reference("hunter22"));
    }

    #[test]
    fn prints_secret_sees_stdout_bundles() {
        let v = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert!(prints_secret(&v("talosctl gen secrets -o -")).is_some());
        assert!(prints_secret(&v("talosctl gen secrets -o /x/secrets.yaml")).is_none());
        assert!(prints_secret(&v("cat /s/infra/secrets.yaml")).is_some());
        assert!(prints_secret(&v("op read op://v/i/f")).is_some());
        assert!(prints_secret(&v("op item get x --vault v --format json")).is_none());
        assert!(prints_secret(&v("kubectl get secret x -n y -o yaml")).is_some());
    }
}
