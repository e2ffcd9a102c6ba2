//! Reading plan and phase files from disk into typed values, with errors that point into the file.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::{UserError, UserErrors};

use super::phase::Phase;
use super::plan::Plan;

/// A loaded plan file and its phase files.
#[derive(Debug, Clone)]
pub struct Spec {
    pub plan: Plan,
    pub plan_file: PathBuf,
    /// Raw bytes of the plan file (for fingerprints of saved plans).
    pub plan_text: String,
    /// Phases in file-name order, each with its file and raw text.
    pub phases: Vec<PhaseFile>,
}

#[derive(Debug, Clone)]
pub struct PhaseFile {
    pub phase: Phase,
    pub file: PathBuf,
    pub text: String,
}

/// The parser's limits. serde-saphyr's defaults (250,000 nodes, 1,000,000 events) guard against
/// YAML bombs, but a generated phase of some 50,000 steps is a legitimate file past them: nodes and
/// events are raised twentyfold; the alias and anchor caps, which are what a bomb needs, stay.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        budget: serde_saphyr::budget! {
            max_nodes: 5_000_000,
            max_events: 20_000_000,
        },
    }
}

/// Parse YAML text into `T`, turning parse and type errors into a [`UserError`] naming the file.
pub fn parse_yaml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, UserError> {
    serde_saphyr::from_str_with_options::<T>(text, yaml_options()).map_err(|e| {
        let mut message = yaml_message(&e);
        let mut err = UserError::new(String::new()).in_file(file);
        let mut help = yaml_help(&e);
        if let Some(loc) = e.location() {
            err = err.at(loc.line(), loc.column());
            if let Some(path) = yaml_path_at(text, loc.line() as usize, loc.column() as usize) {
                if path.ends_with("cidr") && message.contains("address syntax") {
                    let value = text.lines().nth(loc.line() as usize - 1).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim()).unwrap_or("");
                    message = format!("invalid CIDR {value:?}");
                    help = "write an IPv4 network with a prefix length from 0 to 32, such as 10.244.0.0/16".into();
                }
                err = err.field(path);
            }
        }
        err.message = message;
        err.help(help).with_source_line()
    })
}

/// The error's own words, without serde-saphyr's snippet (we render our own, with the file name).
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let plain = e.without_snippet().to_string();
    // serde-saphyr prefixes "line X column Y:" or appends " at line X column Y"; keep the message only.
    let first = plain.lines().next().unwrap_or(&plain).to_string();
    strip_location(&first)
}

fn strip_location(s: &str) -> String {
    let re = regex::Regex::new(r"(?i)\s*(at )?line \d+,? column \d+:?\s*").expect("static regex");
    let out = re
        .replace_all(s, " ")
        .trim()
        .trim_end_matches(':')
        .trim()
        .to_string();
    if out.is_empty() { s.to_string() } else { out }
}

fn yaml_help(e: &serde_saphyr::Error) -> String {
    let msg = e.without_snippet().to_string();
    if msg.contains("budget breached") {
        "the file is larger or more deeply nested than bootstrap reads (a guard against YAML bombs): split it into several phase files".into()
    } else if msg.contains("unknown field") {
        unknown_field_help(&msg)
    } else if msg.contains("missing field") {
        "add the missing field".into()
    } else if msg.contains("invalid IP")
        || msg.contains("address")
        || msg.contains("CIDR")
        || msg.contains("prefix")
    {
        "write an IPv4 address such as 10.25.11.11 or a network such as 10.244.0.0/16".into()
    } else if msg.contains("invalid type") {
        "give a value of the expected type".into()
    } else if msg.contains("invalid u") || msg.contains("invalid i") {
        "give a whole number".into()
    } else if msg.contains("boolean") {
        "write true or false (YAML 1.2: yes/no/on/off are not booleans)".into()
    } else {
        "fix the YAML at the position shown".into()
    }
}

/// "did you mean `timeout`?" for serde's "unknown field `timout`, expected one of a, b, …".
fn unknown_field_help(msg: &str) -> String {
    let re = regex::Regex::new(r"unknown field `([^`]+)`, expected (?:one of )?(.*)")
        .expect("static regex");
    let fallback = "remove the field or correct its spelling; the expected fields are listed above"
        .to_string();
    let Some(c) = re.captures(msg) else {
        return fallback;
    };
    let field = &c[1];
    // The list may end with the location (" at line 18 column 36"), which is not a field.
    let list = c[2].lines().next().unwrap_or("");
    let list = list.split(" at line ").next().unwrap_or(list);
    let expected: Vec<String> = list
        .split(',')
        .map(|f| f.trim().trim_matches('`').trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    match crate::suggest::closest(field, expected.iter().map(String::as_str)) {
        Some(near) => format!("did you mean `{near}`?"),
        None => fallback,
    }
}

/// The dotted field path of the key at a (1-based) line and column of block YAML, e.g.
/// `clusters[1].pod_cidr`. A best-effort reading of indentation, used only to name the field in an error.
pub fn yaml_path_at(text: &str, line: usize, column: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let target = *lines.get(line.checked_sub(1)?)?;
    let indent = |l: &str| l.len() - l.trim_start().len();
    let is_item = |l: &str| l.trim_start().starts_with("- ") || l.trim() == "-";
    let blank = |l: &str| l.trim().is_empty() || l.trim_start().starts_with('#');
    let key_of = |l: &str| -> Option<String> {
        let s = l.trim_start().trim_start_matches('-').trim_start();
        if s.starts_with('{') || s.starts_with('[') {
            return None;
        }
        let (k, _) = s.split_once(':')?;
        let k = k.trim().trim_matches('"').trim_matches('\'');
        (!k.is_empty() && !k.contains(' ')).then(|| k.to_string())
    };
    // Index of the list item starting at `i` among its siblings.
    let index_of = |i: usize| -> usize {
        let ind = indent(lines[i]);
        let mut n = 0;
        for l in lines[..i].iter().rev() {
            if blank(l) {
                continue;
            }
            if indent(l) < ind {
                break;
            }
            if indent(l) == ind && is_item(l) {
                n += 1;
            }
        }
        n
    };
    let mut parts: Vec<String> = Vec::new();
    // The key on the target line, or the key before the column inside a flow mapping.
    let body = target.trim_start().trim_start_matches('-').trim_start();
    if body.starts_with('{') {
        let before: String = target.chars().take(column.saturating_sub(1)).collect();
        if let Some(k) = before
            .rsplit([',', '{'])
            .next()
            .and_then(|s| s.split_once(':'))
            .map(|(k, _)| k.trim().to_string())
        {
            parts.push(k);
        }
    } else if let Some(k) = key_of(target) {
        parts.push(k);
    }
    let mut level = if is_item(target) {
        parts.push(format!("[{}]", index_of(line - 1)));
        indent(target)
    } else {
        indent(target)
    };
    let mut i = line - 1;
    while i > 0 && level > 0 {
        i -= 1;
        let l = lines[i];
        if blank(l) {
            continue;
        }
        let ind = indent(l);
        let content = if is_item(l) { ind + 2 } else { ind };
        if is_item(l) && content == level {
            // The first line of the list item that holds our mapping.
            parts.push(format!("[{}]", index_of(i)));
            level = ind;
        } else if content < level {
            if let Some(k) = key_of(l) {
                parts.push(k);
            }
            if is_item(l) {
                parts.push(format!("[{}]", index_of(i)));
            }
            level = ind;
        }
    }
    if parts.is_empty() {
        return None;
    }
    parts.reverse();
    let mut out = String::new();
    for p in parts {
        if p.starts_with('[') || out.is_empty() {
            out.push_str(&p);
        } else {
            out.push('.');
            out.push_str(&p);
        }
    }
    Some(out)
}

fn read(file: &Path, what: &str) -> Result<String, UserError> {
    std::fs::read_to_string(file).map_err(|e| {
        UserError::new(format!("cannot read {what}: {e}"))
            .in_file(file)
            .help(match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("create it, or point --{what} at an existing file")
                }
                _ => "check the path and its permissions".into(),
            })
    })
}

/// Load and validate a plan file.
pub fn load_plan(file: &Path) -> Result<(Plan, String), UserError> {
    let text = read(file, "plan")?;
    let mut plan: Plan = parse_yaml(file, &text)?;
    plan.dir = super::plan::absolute(file.parent().unwrap_or(Path::new(".")));
    Ok((plan, text))
}

/// Load every `*.yaml`/`*.yml` file of a phase directory, in file-name order.
pub fn load_phases(dir: &Path) -> Result<Vec<PhaseFile>, UserErrors> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        UserErrors(vec![
            UserError::new(format!("cannot read the phase directory: {e}"))
                .in_file(dir)
                .help("point --phases at a directory of phase YAML files"),
        ])
    })?;
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            UserErrors(vec![
                UserError::new(format!("cannot list the phase directory: {e}")).in_file(dir),
            ])
        })?;
        let path = entry.path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) && path.is_file()
        {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(UserErrors(vec![
            UserError::new("the phase directory has no phase files (*.yaml)")
                .in_file(dir)
                .help("add phase files such as 01-foundation.yaml, or point --phases elsewhere"),
        ]));
    }
    let mut phases = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match read(&file, "phases")
            .and_then(|text| parse_yaml::<Phase>(&file, &text).map(|p| (p, text)))
        {
            Ok((phase, text)) => phases.push(PhaseFile { phase, file, text }),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(phases)
    } else {
        Err(UserErrors(errors))
    }
}

/// Load the plan and all phases.
pub fn load_spec(plan_file: &Path, phases_dir: &Path) -> Result<Spec, UserErrors> {
    let mut errors = Vec::new();
    let plan = match load_plan(plan_file) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let phases = match load_phases(phases_dir) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.extend(e.0);
            None
        }
    };
    match (plan, phases) {
        (Some((plan, plan_text)), Some(phases)) if errors.is_empty() => Ok(Spec {
            plan,
            plan_file: plan_file.to_path_buf(),
            plan_text,
            phases,
        }),
        _ => Err(UserErrors(errors)),
    }
}
