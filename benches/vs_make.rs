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

/// Peak RSS (KiB) of one command, through GNU time.
fn peak_rss(c: &Command) -> Option<u64> {
    let mut t = Command::new("/usr/bin/time");
    t.arg("-f")
        .arg("%M")
        .arg(c.get_program())
        .args(c.get_args());
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            t.env(k, v);
        }
    }
    let out = t
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
    println!(
        "bootstrap vs make -j, medians of {reps} alternating runs (ratios: lower is better; target ≤ 1.30)\n"
    );
    println!(
        "| shape | steps | jobs | bootstrap | make | wall ratio | CPU ratio | per step (bootstrap) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        for (name, dag) in [("chains", chains(n)), ("layered", layered(n))] {
            let (bw, bc, mw, mc) = race(&dag, 2, reps);
            println!(
                "| {name} | {} | 2 | {:.2} s | {:.2} s | {:.2}× | {:.2}× | {:.2} ms |",
                dag.steps.len(),
                bw.as_secs_f64(),
                mw.as_secs_f64(),
                bw.as_secs_f64() / mw.as_secs_f64(),
                bc.as_secs_f64() / mc.as_secs_f64().max(1e-9),
                bw.as_secs_f64() * 1000.0 / dag.steps.len() as f64
            );
        }
    }
    let dag = cpfill();
    let (bw, _, mw, _) = race(&dag, 4, reps.min(3));
    let critical = 10.0 * 0.2;
    println!(
        "\ncpfill (30 free steps listed before a 10-step chain, sleep 0.2 each, 4 jobs): makespan ÷ critical path: bootstrap {:.2}, make {:.2} (target ≤ 1.10)",
        bw.as_secs_f64() / critical,
        mw.as_secs_f64() / critical
    );
    // status and plan once a large run is journaled.
    let n = *sizes.iter().max().unwrap_or(&2000);
    let dag = chains(n);
    let dir = tempfile::tempdir().unwrap();
    write_bootstrap(dir.path(), &dag);
    let state = dir.path().join("state");
    measure(bootstrap(
        dir.path(),
        &state,
        &["run", "--concurrency", "2"],
    ));
    let times: Vec<Duration> = (0..reps)
        .map(|_| {
            measure(bootstrap(
                dir.path(),
                &state,
                &["status", "--format", "json"],
            ))
            .0
        })
        .collect();
    println!(
        "\nstatus at {} journaled steps: {:.0} ms (target < 50 ms); peak RSS: status {} KiB, plan {} KiB (target < 48 MiB)",
        dag.steps.len(),
        median(times).as_secs_f64() * 1000.0,
        peak_rss(&bootstrap(
            dir.path(),
            &state,
            &["status", "--format", "json"]
        ))
        .map_or("?".into(), |k| k.to_string()),
        peak_rss(&bootstrap(
            dir.path(),
            &state,
            &["plan", "--format", "json"]
        ))
        .map_or("?".into(), |k| k.to_string()),
    );
    let journal = std::fs::metadata(state.join("journal.jsonl"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "journal: {} bytes for {} steps ({} B per step)",
        journal,
        dag.steps.len(),
        journal / dag.steps.len().max(1) as u64
    );
}
