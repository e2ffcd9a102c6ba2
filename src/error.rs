//! Errors that reach the user, and the exit code each one maps to.
//!
//! Owns the [`UserError`] diagnostic (file, line, field, what is wrong, what would fix it; exit 2)
//! and the [`Exit`] codes shared by every command. It never prints anything itself: `main` renders.

use std::fmt;
use std::path::{Path, PathBuf};

/// Process exit codes, shared by every command (documented in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// A step or a gate failed.
    Failed = 1,
    /// Bad input or usage.
    Usage = 2,
    /// The state directory is locked by another run.
    Locked = 3,
    /// Interrupted (Ctrl-C, SIGINT).
    Interrupted = 130,
    /// Stopped by SIGHUP (128 + 1).
    Hangup = 129,
    /// Stopped by SIGTERM (128 + 15).
    Terminated = 143,
}

/// A mistake in the user's input: a file, a flag or an argument.
///
/// Rendered as one paragraph: `error: FILE:LINE:COL: FIELD: message`, the offending line with a caret,
/// and a `help:` line saying what would fix it.
#[derive(Debug, Clone, Default)]
pub struct UserError {
    pub file: Option<PathBuf>,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub field: Option<String>,
    pub message: String,
    pub help: Option<String>,
    /// Pre-rendered context (for example serde-saphyr's own snippet).
    pub snippet: Option<String>,
}

impl UserError {
    pub fn new(message: impl Into<String>) -> Self {
        UserError {
            message: message.into(),
            ..Default::default()
        }
    }
    pub fn in_file(mut self, file: impl AsRef<Path>) -> Self {
        self.file = Some(file.as_ref().to_path_buf());
        self
    }
    pub fn at(mut self, line: u64, column: u64) -> Self {
        if line > 0 {
            self.line = Some(line);
            self.column = Some(column.max(1));
        }
        self
    }
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    /// Attach the source line (read from the file) with a caret under the column.
    pub fn with_source_line(mut self) -> Self {
        if self.snippet.is_some() {
            return self;
        }
        if let (Some(file), Some(line)) = (&self.file, self.line)
            && let Ok(text) = std::fs::read_to_string(file)
            && let Some(src) = text.lines().nth((line - 1) as usize)
        {
            let col = self.column.unwrap_or(1) as usize;
            let gutter = line.to_string().len();
            let caret_pad: String = src
                .chars()
                .take(col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            self.snippet = Some(format!(
                "{:gutter$} |\n{line} | {src}\n{:gutter$} | {caret_pad}^",
                "", ""
            ));
        }
        self
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(col) = self.column {
                    write!(f, ":{col}")?;
                }
            }
            write!(f, ": ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(snippet) = &self.snippet {
            write!(f, "\n{snippet}")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\nhelp: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UserError {}

/// Several user errors found at once (lint, load). Exit 2.
#[derive(Debug, Clone, Default)]
pub struct UserErrors(pub Vec<UserError>);

impl fmt::Display for UserErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UserErrors {}

/// An error carrying its own exit code (step failed, locked, interrupted).
#[derive(Debug)]
pub struct ExitError {
    pub code: Exit,
    pub message: String,
}

impl ExitError {
    pub fn new(code: Exit, message: impl Into<String>) -> Self {
        ExitError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ExitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitError {}

/// Shorthand used across the crate.
pub type Result<T, E = color_eyre::Report> = std::result::Result<T, E>;

/// Map any error to the exit code it stands for.
pub fn exit_code_of(err: &color_eyre::Report) -> Exit {
    if err.downcast_ref::<UserError>().is_some() || err.downcast_ref::<UserErrors>().is_some() {
        return Exit::Usage;
    }
    if let Some(e) = err.downcast_ref::<ExitError>() {
        return e.code;
    }
    Exit::Failed
}
