//! What every rule reads: the plan, the rendered graph, and helpers to find a unit's commands, its
//! prerequisites and the line of the phase file that wrote a value.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::dag::{Dag, Unit, Work};
use crate::error::UserError;
use crate::spec::load::Spec;
use crate::spec::phase::ActionSpec;

/// Which part of a step an action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Check,
    Run,
    Verify,
    Gate,
}

impl Role {
    pub fn field(self) -> &'static str {
        match self {
            Role::Check => "check",
            Role::Run => "run",
            Role::Verify => "verify",
            Role::Gate => "check",
        }
    }
}

/// One simple command of an action: argv, and where its stdout goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleCmd {
    pub argv: Vec<String>,
    /// Stdout goes to a file (`>`), not to the step's output.
    pub redirected: bool,
    /// Stdout goes into a pipe.
    pub piped: bool,
    /// Written as a shell script (`shell:` or `sh -c`).
    pub in_shell: bool,
}

impl SimpleCmd {
    /// Whether its stdout reaches the step's output (and so the log).
    pub fn prints(&self) -> bool {
        !self.redirected && !self.piped
    }
    pub fn tool(&self) -> &str {
        self.argv
            .first()
            .map(|s| s.rsplit('/').next().unwrap_or(s))
            .unwrap_or("")
    }
}

pub struct Ctx<'a> {
    pub spec: &'a Spec,
    pub dag: &'a Dag,
    #[allow(dead_code)]
    pub state_dir: &'a Path,
    index: HashMap<&'a str, usize>,
    /// The last unit's ancestors (its actions ask in a row). Not every unit's: on long chains
    /// those sets add up to the square of the plan's size.
    ancestors: std::cell::RefCell<Option<(usize, HashSet<usize>)>>,
}

impl<'a> Ctx<'a> {
    pub fn new(spec: &'a Spec, dag: &'a Dag, state_dir: &'a Path) -> Self {
        let index = dag
            .work
            .iter()
            .enumerate()
            .map(|(i, w)| (w.id(), i))
            .collect();
        Ctx {
            spec,
            dag,
            state_dir,
            index,
            ancestors: Default::default(),
        }
    }

    /// Steps, with their index in `dag.work`.
    pub fn units(&self) -> impl Iterator<Item = (usize, &'a Unit)> + '_ {
        self.dag
            .work
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.as_step().map(|u| (i, u)))
    }

    /// Everything `i` needs, directly or not.
    pub fn ancestors(&self, i: usize) -> HashSet<usize> {
        if let Some((last, a)) = &*self.ancestors.borrow()
            && *last == i
        {
            return a.clone();
        }
        let mut seen = HashSet::new();
        let mut stack = vec![i];
        while let Some(j) = stack.pop() {
            for n in self.dag.work[j].needs() {
                if let Some(&k) = self.index.get(n.as_str())
                    && seen.insert(k)
                {
                    stack.push(k);
                }
            }
        }
        *self.ancestors.borrow_mut() = Some((i, seen.clone()));
        seen
    }

    /// The text of a phase file (or the plan file).
    pub fn text_of(&self, file: &Path) -> Option<&'a str> {
        if file == self.spec.plan_file {
            return Some(&self.spec.plan_text);
        }
        self.spec
            .phases
            .iter()
            .find(|p| p.file == file)
            .map(|p| p.text.as_str())
    }

    /// The line and column in `u`'s phase file where `needle` is first written, searching the step's
    /// own lines (from its id to the next step), else the step's line.
    pub fn locate(&self, u: &Unit, needles: &[&str]) -> (u64, u64) {
        locate_in(self.text_of(&u.file), u.line, needles)
    }

    /// A finding on a step, pointing at the first line of the step that shows one of `needles`.
    pub fn on_step(&self, u: &Unit, field: &str, needles: &[&str], msg: String) -> UserError {
        // Search from the step's `run:`/`check:`/`verify:`/`env:` key, so the step's description
        // never matches.
        let key = format!("{}:", field.split('.').next().unwrap_or(field));
        let text = self.text_of(&u.file);
        let (from, _) = locate_in(text, u.line, &[&key]);
        let (line, col) = if from != u.line || needles.is_empty() {
            let (l, c) = locate_in(text, from, needles);
            if l == from && c == 1 {
                locate_in(text, from, &[&key])
            } else {
                (l, c)
            }
        } else {
            self.locate(u, needles)
        };
        UserError::new(msg)
            .in_file(&u.file)
            .at(line, col)
            .field(format!("steps.{}.{field}", u.step))
            .with_source_line()
    }

    /// The phase file and line of a gate item.
    pub fn gate_item_at(&self, phase: &str, item: &str) -> (PathBuf, u64, u64) {
        for p in &self.spec.phases {
            if p.phase.id.value != phase {
                continue;
            }
            let base = item.split('/').next().unwrap_or(item);
            for g in &p.phase.gate {
                if g.id.value == base {
                    return (
                        p.file.clone(),
                        g.check.referenced.line(),
                        g.check.referenced.column(),
                    );
                }
            }
            return (p.file.clone(), 0, 0);
        }
        (PathBuf::new(), 0, 0)
    }
}

pub fn locate_plain(text: &str, after: u64, needle: &str) -> (u64, u64) {
    for (n, l) in text.lines().enumerate() {
        let line = n as u64 + 1;
        if line < after {
            continue;
        }
        if let Some(c) = l.find(needle) {
            return (line, c as u64 + 1);
        }
    }
    (after, 1)
}

fn locate_in(text: Option<&str>, start: u64, needles: &[&str]) -> (u64, u64) {
    let Some(text) = text else {
        return (start, 1);
    };
    let lines: Vec<&str> = text.lines().collect();
    let from = start.saturating_sub(1) as usize;
    if from >= lines.len() {
        return (start, 1);
    }
    // The step's block ends where the next list item of the same indentation starts.
    let indent = |l: &str| l.len() - l.trim_start().len();
    let step_indent = indent(lines[from]);
    let is_item = lines[from].trim_start().starts_with("- ");
    let mut end = lines.len();
    for (k, l) in lines.iter().enumerate().skip(from + 1) {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if indent(l) < step_indent
            || (indent(l) == step_indent && (t.starts_with("- ") || !is_item))
        {
            end = k;
            break;
        }
        if indent(l) + 2 == step_indent && t.starts_with("- ") {
            end = k;
            break;
        }
    }
    for needle in needles {
        if needle.is_empty() {
            continue;
        }
        for (k, l) in lines.iter().enumerate().take(end).skip(from) {
            if let Some(c) = l.find(needle) {
                return (k as u64 + 1, c as u64 + 1);
            }
        }
    }
    (start, 1)
}

/// Every action of a work item, with its role.
pub fn roles(w: &Work) -> Vec<(Role, &ActionSpec)> {
    match w {
        Work::Step(u) => {
            let mut v = Vec::new();
            if let Some(c) = u.check.as_deref() {
                v.push((Role::Check, c));
            }
            v.push((Role::Run, &*u.run));
            if let Some(c) = u.verify.as_deref() {
                v.push((Role::Verify, c));
            }
            v
        }
        Work::Gate(g) => g.items.iter().map(|i| (Role::Gate, &i.check)).collect(),
    }
}

pub fn actions(w: &Work) -> Vec<&ActionSpec> {
    roles(w).into_iter().map(|(_, a)| a).collect()
}

pub fn argv_of(a: &ActionSpec) -> Option<&[String]> {
    match a {
        ActionSpec::Cmd(v) => Some(v),
        ActionSpec::Json(j) => Some(&j.cmd),
        ActionSpec::HelmValues(h) => Some(&h.cmd),
        _ => None,
    }
}

/// The shell script of an action, if it is one (`shell:`, or `cmd: [sh, -c, script, …]`).
pub fn script_of(a: &ActionSpec) -> Option<&str> {
    match a {
        ActionSpec::Shell(s) => Some(s),
        other => {
            let v = argv_of(other)?;
            let sh = v.first()?.rsplit('/').next()?;
            if matches!(sh, "sh" | "bash" | "zsh" | "dash")
                && v.get(1).map(String::as_str) == Some("-c")
            {
                v.get(2).map(String::as_str)
            } else {
                None
            }
        }
    }
}

/// The simple commands an action runs: its argv, or each command of its shell script.
pub fn commands(a: &ActionSpec) -> Vec<SimpleCmd> {
    if let Some(script) = script_of(a) {
        let mut cmds = split_shell(script);
        // `cmd: [sh, -c, script, name, arg1, …]`: the plan values arrive as "$1", "$2"…, the way
        // the phases pass them (never spliced into the script); read them as the shell would.
        if let Some(v) = argv_of(a).filter(|v| v.len() > 4) {
            for c in &mut cmds {
                for w in &mut c.argv {
                    let n = w
                        .strip_prefix("${")
                        .and_then(|r| r.strip_suffix('}'))
                        .or_else(|| w.strip_prefix('$'))
                        .and_then(|n| n.parse::<usize>().ok());
                    if let Some(arg) = n.filter(|n| *n >= 1).and_then(|n| v.get(3 + n)) {
                        *w = arg.clone();
                    }
                }
            }
        }
        return cmds;
    }
    match argv_of(a) {
        Some(v) if !v.is_empty() => vec![SimpleCmd {
            argv: v.to_vec(),
            redirected: false,
            piped: false,
            in_shell: false,
        }],
        _ => Vec::new(),
    }
}

/// A small reading of POSIX shell: simple commands split on `|`, `&&`, `||`, `;` and newlines,
/// words with quotes removed, redirections noted. Enough to see which tools run with which flags;
/// `$(…)` and here-documents are not followed.
pub fn split_shell(script: &str) -> Vec<SimpleCmd> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut redirected = false;
    let mut expect_target = false;
    let chars: Vec<char> = script.chars().collect();
    let mut i = 0;
    let flush_word =
        |word: &mut String, in_word: &mut bool, words: &mut Vec<String>, expect: &mut bool| {
            if *in_word {
                if *expect {
                    *expect = false;
                } else {
                    words.push(std::mem::take(word));
                }
                word.clear();
                *in_word = false;
            }
        };
    let mut end_cmd = |words: &mut Vec<String>, redirected: &mut bool, piped: bool| {
        if !words.is_empty() {
            out.push(SimpleCmd {
                argv: std::mem::take(words),
                redirected: *redirected,
                piped,
                in_shell: true,
            });
        }
        *redirected = false;
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    word.push(chars[i]);
                    i += 1;
                }
            }
            '"' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\'
                        && i + 1 < chars.len()
                        && matches!(chars[i + 1], '"' | '\\' | '$' | '`')
                    {
                        i += 1;
                    }
                    word.push(chars[i]);
                    i += 1;
                }
            }
            '\\' => {
                if i + 1 < chars.len() {
                    if chars[i + 1] == '\n' {
                        i += 1; // line continuation
                    } else {
                        in_word = true;
                        word.push(chars[i + 1]);
                        i += 1;
                    }
                }
            }
            '#' if !in_word => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            ' ' | '\t' => flush_word(&mut word, &mut in_word, &mut words, &mut expect_target),
            '\n' | ';' | '&' | '|' | '(' | ')' => {
                flush_word(&mut word, &mut in_word, &mut words, &mut expect_target);
                let piped = c == '|' && chars.get(i + 1) != Some(&'|');
                end_cmd(&mut words, &mut redirected, piped);
                if (c == '|' || c == '&') && chars.get(i + 1) == Some(&c) {
                    i += 1;
                }
            }
            '>' | '<' => {
                // `2>`/`2>&1` only move stderr; `>`, `>>`, `1>` and `&>` move stdout.
                let fd: String = word.clone();
                let stdout = c == '>' && (fd.is_empty() || fd == "1" || fd == "&");
                if !in_word || fd.chars().all(|ch| ch.is_ascii_digit() || ch == '&') {
                    word.clear();
                    in_word = false;
                } else {
                    flush_word(&mut word, &mut in_word, &mut words, &mut expect_target);
                }
                if chars.get(i + 1) == Some(&'>') {
                    i += 1;
                }
                if chars.get(i + 1) == Some(&'&') {
                    // >&2 or 2>&1: a descriptor, not a file.
                    i += 1;
                    let mut target = String::new();
                    while i + 1 < chars.len() && chars[i + 1].is_ascii_digit() {
                        i += 1;
                        target.push(chars[i]);
                    }
                    if stdout && target != "1" {
                        redirected = true;
                    }
                } else {
                    if stdout {
                        redirected = true;
                    }
                    expect_target = true;
                }
            }
            _ => {
                in_word = true;
                word.push(c);
            }
        }
        i += 1;
    }
    flush_word(&mut word, &mut in_word, &mut words, &mut expect_target);
    end_cmd(&mut words, &mut redirected, false);
    out
}

/// Positional arguments after the tool name, skipping flags and (for flags in `valued`) their
/// values. `--flag=value` counts as one flag.
pub fn positionals<'s>(argv: &'s [String], valued: &dyn Fn(&str) -> bool) -> Vec<&'s str> {
    let mut out = Vec::new();
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i].as_str();
        if a == "--" {
            out.extend(argv[i + 1..].iter().map(String::as_str));
            break;
        }
        if a.starts_with('-') && a.len() > 1 {
            if !a.contains('=') && valued(a) {
                i += 1;
            }
        } else {
            out.push(a);
        }
        i += 1;
    }
    out
}

/// Values of a flag (`--f v`, `--f=v`), in order.
pub fn flag_values<'s>(argv: &'s [String], names: &[&str]) -> Vec<&'s str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let a = argv[i].as_str();
        if names.contains(&a) {
            if let Some(v) = argv.get(i + 1) {
                out.push(v.as_str());
            }
            i += 2;
            continue;
        }
        if let Some((k, v)) = a.split_once('=')
            && names.contains(&k)
        {
            out.push(v);
        }
        i += 1;
    }
    out
}

pub fn has_flag(argv: &[String], names: &[&str]) -> bool {
    argv.iter().any(|a| {
        names.contains(&a.as_str()) || a.split_once('=').is_some_and(|(k, _)| names.contains(&k))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_splits_pipes_and_redirections() {
        let c = split_shell(
            "talosctl gen secrets -o - | op document create -\ncat a > /dev/null 2>&1; cat b 2>/dev/null",
        );
        assert_eq!(c.len(), 4);
        assert!(c[0].piped && !c[0].redirected);
        assert_eq!(c[0].argv, ["talosctl", "gen", "secrets", "-o", "-"]);
        assert!(c[2].redirected, "{:?}", c[2]);
        assert_eq!(c[2].argv, ["cat", "a"]);
        assert!(c[3].prints(), "{:?}", c[3]);
        assert_eq!(c[3].argv, ["cat", "b"]);
    }
}
