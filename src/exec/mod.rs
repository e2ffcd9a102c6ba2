//! Child processes: each command in its own process group with stdin closed, its output streamed with
//! timestamps to a log, and the whole group killed (TERM, then KILL after a grace period) on timeout or
//! interruption, so that no grandchild survives.
//!
//! Owns spawning and reaping. It never decides retries and never records state. Built on
//! `tokio::process` (one layer): async wait, timeout and cancellation in the engine's runtime.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

use crate::secrets::Redactor;

mod log;

/// How long a process group gets between TERM and KILL.
pub const GRACE: Duration = Duration::from_secs(3);
/// Lines of output kept in memory (the tail, for reports and JSON checks).
const KEEP_LINES: usize = 2000;

/// What to run.
#[derive(Debug, Clone)]
pub enum Program {
    Argv(Vec<String>),
    Shell(String),
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub program: Program,
    pub env: BTreeMap<String, String>,
    /// Give the child our stdin (otherwise it is closed).
    pub stdin: bool,
    pub timeout: Duration,
    /// Append output here: the file is created on the first line of output, or when the command
    /// fails (a quiet success leaves none).
    pub log: Option<PathBuf>,
    /// A label written in the log before the output.
    pub label: String,
    /// Told the process group id once the command has started (the journal records it, so a
    /// later run can stop what a killed run left running).
    pub spawned: Option<tokio::sync::mpsc::UnboundedSender<u32>>,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signalled(i32),
    TimedOut,
    Cancelled,
    /// It could not start (not found, not executable).
    SpawnFailed(String),
}

#[derive(Debug, Clone)]
pub struct Finished {
    pub ending: Ending,
    pub duration: Duration,
    /// Stdout lines (redacted).
    pub stdout: Vec<String>,
    /// Stdout and stderr interleaved as they arrived (redacted), the last lines.
    pub output: Vec<String>,
    pub pid: Option<u32>,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.ending == Ending::Exited(0)
    }
    pub fn exit_code(&self) -> Option<i32> {
        match self.ending {
            Ending::Exited(c) => Some(c),
            _ => None,
        }
    }
    /// The last `n` output lines joined.
    pub fn tail(&self, n: usize) -> String {
        let start = self.output.len().saturating_sub(n);
        self.output[start..].join("\n")
    }
    pub fn describe(&self) -> String {
        match &self.ending {
            Ending::Exited(c) => format!("exit code {c}"),
            Ending::Signalled(s) => format!("killed by signal {s}"),
            Ending::TimedOut => "timed out".into(),
            Ending::Cancelled => "interrupted".into(),
            Ending::SpawnFailed(e) => format!("could not start: {e}"),
        }
    }
}

/// Cancellation: `true` once the run is interrupted; a second level kills at once.
#[derive(Clone)]
pub struct Cancel(pub watch::Receiver<u8>);

impl Cancel {
    pub fn level(&self) -> u8 {
        *self.0.borrow()
    }
    pub fn never() -> Cancel {
        let (tx, rx) = watch::channel(0);
        std::mem::forget(tx);
        Cancel(rx)
    }
    async fn reached(&mut self, level: u8) {
        while *self.0.borrow() < level {
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

fn signal_group(pid: u32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pid as i32), sig);
}

/// Run one program to its end. `on_line` sees every (redacted) output line as it arrives.
pub async fn run(
    spec: &Spec,
    redactor: &Redactor,
    mut cancel: Cancel,
    mut on_line: impl FnMut(&str),
) -> Finished {
    let started = Instant::now();
    let mut cmd = match &spec.program {
        Program::Argv(argv) => {
            let mut c = tokio::process::Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
        Program::Shell(script) => {
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c").arg(script);
            c
        }
    };
    cmd.envs(&spec.env)
        .stdin(if spec.stdin {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let shown = match &spec.program {
        Program::Argv(a) => a
            .iter()
            .map(|s| crate::spec::describe::shell_quote(s))
            .collect::<Vec<_>>()
            .join(" "),
        Program::Shell(s) => format!("sh -c {}", crate::spec::describe::shell_quote(s)),
    };
    let mut log = log::Log::new(
        spec.log.clone(),
        format!(
            "{} ---- {}: {}\n",
            crate::state::now(),
            spec.label,
            redactor.redact(&shown)
        ),
    );
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let prog = match &spec.program {
                Program::Argv(a) => a[0].clone(),
                Program::Shell(_) => "sh".into(),
            };
            let msg = if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "{prog}: command not found on PATH (install it; `bootstrap lint --tools` lists what the steps need)"
                )
            } else {
                format!("{prog}: {e}")
            };
            log.end(&format!("{} ---- {msg}\n", crate::state::now()), true)
                .await;
            on_line(&msg);
            return Finished {
                ending: Ending::SpawnFailed(msg.clone()),
                duration: started.elapsed(),
                stdout: Vec::new(),
                output: vec![msg],
                pid: None,
            };
        }
    };
    let pid = child.id();
    if let (Some(tell), Some(p)) = (&spec.spawned, pid) {
        let _ = tell.send(p);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, String)>();
    let out = child.stdout.take().map(|s| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(s).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send((true, l));
            }
        })
    });
    let err = child.stderr.take().map(|s| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(s).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send((false, l));
            }
        })
    });
    drop(tx);
    let mut stdout = Vec::new();
    let mut output: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let mut ending: Option<Ending> = None;
    let mut streams_open = true;
    let status = loop {
        tokio::select! {
            msg = rx.recv(), if streams_open => match msg {
                Some((is_out, line)) => {
                    let line = redactor.redact(&line);
                    log.line(&format!("{} {} {}\n", crate::state::now(), if is_out { "out" } else { "err" }, line)).await;
                    on_line(&line);
                    if is_out {
                        stdout.push(line.clone());
                    }
                    output.push_back(line);
                    if output.len() > KEEP_LINES {
                        output.pop_front();
                    }
                }
                None => streams_open = false,
            },
            st = child.wait() => break st.ok(),
            _ = &mut deadline, if ending.is_none() => {
                ending = Some(Ending::TimedOut);
                if let Some(p) = pid { terminate(p, &mut child, &mut cancel).await; }
            }
            _ = cancel.reached(1), if ending.is_none() => {
                ending = Some(Ending::Cancelled);
                if let Some(p) = pid {
                    if cancel.level() >= 2 { signal_group(p, Signal::SIGKILL); } else { terminate(p, &mut child, &mut cancel).await; }
                }
            }
        }
    };
    // The leader is gone; make sure nothing of its group is left, then drain what it printed.
    if let Some(p) = pid {
        signal_group(p, Signal::SIGKILL);
    }
    let drain = async {
        while let Some((is_out, line)) = rx.recv().await {
            let line = redactor.redact(&line);
            log.line(&format!(
                "{} {} {}\n",
                crate::state::now(),
                if is_out { "out" } else { "err" },
                line
            ))
            .await;
            on_line(&line);
            if is_out {
                stdout.push(line.clone());
            }
            output.push_back(line);
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    for h in [out, err].into_iter().flatten() {
        h.abort();
    }
    let ending = ending.unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        match status {
            Some(s) => match s.code() {
                Some(c) => Ending::Exited(c),
                None => Ending::Signalled(s.signal().unwrap_or(0)),
            },
            None => Ending::Signalled(0),
        }
    });
    let closing = format!(
        "{} ---- {} after {:.1}s\n",
        crate::state::now(),
        match &ending {
            Ending::Exited(c) => format!("exit code {c}"),
            Ending::Signalled(s) => format!("signal {s}"),
            Ending::TimedOut => "timed out; process group killed".into(),
            Ending::Cancelled => "interrupted; process group killed".into(),
            Ending::SpawnFailed(e) => e.clone(),
        },
        started.elapsed().as_secs_f64()
    );
    log.end(&closing, ending != Ending::Exited(0)).await;
    Finished {
        ending,
        duration: started.elapsed(),
        stdout,
        output: output.into_iter().collect(),
        pid,
    }
}

/// TERM the group, wait up to the grace period for the leader, then KILL the group. A second
/// Ctrl-C during the grace period kills at once.
async fn terminate(pid: u32, child: &mut tokio::process::Child, cancel: &mut Cancel) {
    signal_group(pid, Signal::SIGTERM);
    let exited = tokio::select! {
        r = tokio::time::timeout(GRACE, child.wait()) => r.is_ok(),
        _ = cancel.reached(2) => false,
    };
    if !exited {
        signal_group(pid, Signal::SIGKILL);
    }
}

/// Members of process group `pgid` that carry `marker` (`NAME=value`) in their environment: a
/// group a run started (its steps get `BOOTSTRAP_RUN_ID`), not a stranger that reused the number.
pub fn group_members_with(pgid: u32, marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis: state, ppid, pgrp, …
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|f| f.parse::<u32>().ok());
        if pgrp != Some(pgid) {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// Stop a process group left running by a killed run: TERM, a grace period, then KILL.
pub fn stop_group(pgid: u32) {
    signal_group(pgid, Signal::SIGTERM);
    let t = Instant::now();
    while t.elapsed() < GRACE {
        if killpg(Pid::from_raw(pgid as i32), None).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal_group(pgid, Signal::SIGKILL);
}
