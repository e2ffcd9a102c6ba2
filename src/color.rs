//! The one decision about colour and the terminal, made once per process from `--color`, `NO_COLOR`,
//! `TERM` and whether stdout/stderr are terminals, and read by clap, tracing, indicatif and every
//! view.
//!
//! Owns that decision and the CI test. It never writes output itself.

use std::io::IsTerminal;
use std::sync::OnceLock;

use crate::cli::{ColorMode, Global};

/// What the process may do on its two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// SGR sequences (colour, bold) on stdout.
    pub stdout: bool,
    /// SGR sequences on stderr.
    pub stderr: bool,
    /// stderr is a terminal that can redraw (not `TERM=dumb`): progress bars may be drawn.
    pub live: bool,
    /// Only errors and the final summary (`-q`).
    pub quiet: bool,
    /// `-v`: output lines are shown, and plain lines are used instead of bars.
    pub verbose: bool,
}

/// What [`decide`] looks at, gathered once (so it can be tested without a terminal).
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub no_color: Option<String>,
    pub term: Option<String>,
    pub ci: Option<String>,
    pub stdout_tty: bool,
    pub stderr_tty: bool,
}

impl Inputs {
    pub fn from_env() -> Inputs {
        Inputs {
            no_color: std::env::var("NO_COLOR").ok(),
            term: std::env::var("TERM").ok(),
            ci: std::env::var("CI").ok(),
            stdout_tty: std::io::stdout().is_terminal(),
            stderr_tty: std::io::stderr().is_terminal(),
        }
    }
}

/// `CI` counts when it is set to anything but an empty string, `0` or `false`.
pub fn ci_value_is_true(v: Option<&str>) -> bool {
    match v {
        None => false,
        Some(v) => {
            let v = v.trim();
            !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
        }
    }
}

/// Whether this process runs under CI (`CI=false` and `CI=0` do not count).
pub fn is_ci() -> bool {
    ci_value_is_true(std::env::var("CI").ok().as_deref())
}

/// The decision, from the flag and the inputs.
pub fn decide(mode: ColorMode, quiet: bool, verbose: bool, i: &Inputs) -> Decision {
    let dumb = i.term.as_deref() == Some("dumb");
    let no_color = i.no_color.as_deref().is_some_and(|v| !v.is_empty());
    let auto = |tty: bool| tty && !no_color && !dumb;
    let (stdout, stderr) = match mode {
        ColorMode::Always => (true, true),
        ColorMode::Never => (false, false),
        ColorMode::Auto => (auto(i.stdout_tty), auto(i.stderr_tty)),
    };
    Decision {
        stdout,
        stderr,
        live: i.stderr_tty && !dumb && !ci_value_is_true(i.ci.as_deref()),
        quiet,
        verbose,
    }
}

static DECISION: OnceLock<Decision> = OnceLock::new();

/// Make the decision for this process (once, at start) and hand it to anstream's global choice.
pub fn init(g: &Global) -> Decision {
    let d = decide(g.color, g.quiet, g.verbose > 0, &Inputs::from_env());
    let _ = DECISION.set(d);
    let d = get();
    anstream::ColorChoice::write_global(if d.stdout || d.stderr {
        anstream::ColorChoice::Always
    } else {
        anstream::ColorChoice::Never
    });
    d
}

/// The decision made by [`init`] (or, before it, the automatic one).
pub fn get() -> Decision {
    *DECISION.get_or_init(|| decide(ColorMode::Auto, false, false, &Inputs::from_env()))
}

/// clap's colour for help and errors, from the raw arguments (clap decides before parsing is done).
pub fn clap_choice(args: &[std::ffi::OsString]) -> clap::ColorChoice {
    let mut mode = ColorMode::Auto;
    let mut it = args.iter().map(|a| a.to_string_lossy());
    while let Some(a) = it.next() {
        let v = if let Some(v) = a.strip_prefix("--color=") {
            Some(v.to_string())
        } else if a == "--color" {
            it.next().map(|v| v.to_string())
        } else {
            None
        };
        match v.as_deref() {
            Some("never") => mode = ColorMode::Never,
            Some("always") => mode = ColorMode::Always,
            Some("auto") => mode = ColorMode::Auto,
            _ => {}
        }
    }
    let d = decide(mode, false, false, &Inputs::from_env());
    match mode {
        ColorMode::Always => clap::ColorChoice::Always,
        _ if d.stdout && d.stderr => clap::ColorChoice::Auto,
        _ => clap::ColorChoice::Never,
    }
}

/// Wrap `text` in `style` when `on`.
pub fn paint(on: bool, style: anstyle::Style, text: &str) -> String {
    if on {
        format!("{}{text}{}", style.render(), style.render_reset())
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tty() -> Inputs {
        Inputs {
            stdout_tty: true,
            stderr_tty: true,
            term: Some("xterm-256color".into()),
            ..Inputs::default()
        }
    }

    #[test]
    fn flag_env_and_terminal_make_one_decision() {
        assert!(decide(ColorMode::Auto, false, false, &tty()).stderr);
        assert!(!decide(ColorMode::Never, false, false, &tty()).stderr);
        let no_color = Inputs {
            no_color: Some("1".into()),
            ..tty()
        };
        assert!(!decide(ColorMode::Auto, false, false, &no_color).stdout);
        assert!(decide(ColorMode::Always, false, false, &no_color).stdout);
        let dumb = Inputs {
            term: Some("dumb".into()),
            ..tty()
        };
        let d = decide(ColorMode::Auto, false, false, &dumb);
        assert!(!d.stderr && !d.live);
        let pipe = Inputs::default();
        assert!(!decide(ColorMode::Auto, false, false, &pipe).stdout);
    }

    #[test]
    fn ci_false_is_not_ci() {
        assert!(!ci_value_is_true(Some("false")));
        assert!(!ci_value_is_true(Some("0")));
        assert!(!ci_value_is_true(Some("")));
        assert!(!ci_value_is_true(None));
        assert!(ci_value_is_true(Some("true")));
        assert!(ci_value_is_true(Some("1")));
        let ci_false = Inputs {
            ci: Some("false".into()),
            ..tty()
        };
        assert!(decide(ColorMode::Auto, false, false, &ci_false).live);
    }
}
