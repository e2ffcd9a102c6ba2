//! The Kubernetes backend as a [`Store`]: a thread of its own speaks to the cluster
//! ([`super::remote`]), a local spool keeps every record durable on this machine until the cluster
//! has it, and the lease is renewed in the background while a run holds it.
//!
//! A record is first appended to `<state dir>/spool.jsonl` and fsync'd, then sent. When the API
//! server cannot be reached the records stay in the spool and go with the next batch; the next run
//! from this machine sends what is left, unless the backend moved on in the meantime (someone
//! else's run took over), in which case the spool is set aside, never merged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::remote::{Acquired, Location, Position, Remote, Renewal};
use super::{Holder, Record, State, Store};
use crate::error::Result;

/// Set when a run loses its lock (the lease was taken, or could not be renewed for its duration).
#[derive(Default)]
pub struct Lost {
    flag: AtomicBool,
    reason: Mutex<String>,
    notify: tokio::sync::Notify,
}

impl Lost {
    pub fn new() -> Arc<Lost> {
        Arc::new(Lost::default())
    }
    pub fn set(&self, why: String) {
        if !self.flag.swap(true, Ordering::SeqCst) {
            *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = why;
            self.notify.notify_waiters();
        }
    }
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    pub fn reason(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// Resolves once the lock is lost.
    pub async fn wait(&self) {
        loop {
            let n = self.notify.notified();
            if self.is_set() {
                return;
            }
            n.await;
        }
    }
}

type Job = Box<dyn for<'a> FnOnce(&'a mut Worker) -> BoxFuture<'a, ()> + Send>;

/// The backend thread's side: the connection and the renewal task.
struct Worker {
    remote: Remote,
    renewal: Option<tokio::task::AbortHandle>,
    lost: Arc<Lost>,
}

/// A connection to the backend, served by a thread with its own runtime (callers may be inside
/// another runtime or none).
struct Conn {
    tx: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Conn {
    fn open(loc: &Location, lost: Arc<Lost>) -> Result<Conn> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let loc = loc.clone();
        let thread = std::thread::Builder::new()
            .name("state-backend".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let remote = match Remote::connect(&loc).await {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let mut w = Worker {
                        remote,
                        renewal: None,
                        lost,
                    };
                    while let Some(job) = rx.recv().await {
                        job(&mut w).await;
                    }
                    if let Some(r) = w.renewal.take() {
                        r.abort();
                    }
                });
            })?;
        ready_rx
            .recv()
            .map_err(|_| color_eyre::eyre::eyre!("state backend: its thread stopped"))??;
        Ok(Conn {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Run `f` on the backend thread and wait for its result.
    fn call<T: Send + 'static>(
        &self,
        f: impl for<'a> FnOnce(&'a mut Worker) -> BoxFuture<'a, Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move |w: &mut Worker| {
            Box::pin(async move {
                let _ = tx.send(f(w).await);
            })
        });
        self.tx
            .as_ref()
            .and_then(|t| t.send(job).ok())
            .ok_or_else(|| color_eyre::eyre::eyre!("state backend: its thread stopped"))?;
        rx.recv()
            .map_err(|_| color_eyre::eyre::eyre!("state backend: its thread stopped"))?
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Keep the lease: renew it every quarter of its duration. Lost when a renewal finds another
/// holder, or when no renewal *sent* in the last two thirds of the duration got through: the lease
/// may run out on the taker's side (its clock, a request that hangs) before this side hears, so
/// the run stops well before then (client-go's leader election keeps the same margin between its
/// renew deadline and the lease duration).
async fn renew(remote: Remote, lost: Arc<Lost>, seconds: u32) {
    let duration = Duration::from_secs(u64::from(seconds.max(1)));
    let every = duration / 4;
    let answer_within = duration / 3;
    let deadline = duration * 2 / 3;
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(every.min(deadline.saturating_sub(last_ok.elapsed()))).await;
        let late = last_ok.elapsed() >= deadline;
        let sent = Instant::now();
        // Past the deadline (this process was stopped, or the requests hung) one more renewal
        // still says what happened: taken over, or renewed after all (a write with the
        // resourceVersion just read succeeds only if nobody took the lease meanwhile).
        let failure = match tokio::time::timeout(answer_within, remote.renew()).await {
            Ok(Ok(Renewal::Renewed)) => {
                if late {
                    tracing::warn!(
                        "state backend: the lock was renewed late ({:?} after the last renewal); nobody had taken it",
                        last_ok.elapsed()
                    );
                }
                last_ok = sent;
                continue;
            }
            Ok(Ok(Renewal::Taken(by))) => {
                let by = by.map_or("someone else".to_string(), |h| h.to_string());
                lost.set(format!("the lock was taken over by {by}"));
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {answer_within:?}"),
        };
        tracing::warn!("state backend: cannot renew the lock: {failure}");
        if last_ok.elapsed() >= deadline {
            lost.set(format!(
                "the lock could not be renewed for {} s of its {seconds} s lease (the API server is unreachable: {failure})",
                last_ok.elapsed().as_secs()
            ));
            return;
        }
    }
}

/// Records written here but not yet in the backend: a header naming where the backend's journal
/// ended when the first of them was written, then the records.
struct Spool {
    path: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SpoolHeader {
    spool: Option<Position>,
}

impl Spool {
    fn text(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap_or_default()
    }
    /// The position it was written after, and its records.
    fn read(&self) -> Option<(Option<Position>, Vec<u8>)> {
        let text = self.text();
        let nl = text.iter().position(|b| *b == b'\n')?;
        let header: SpoolHeader = serde_json::from_slice(&text[..nl]).ok()?;
        let mut records = text[nl + 1..].to_vec();
        // A torn last record (a crash mid-write) was never acknowledged.
        if let Some(end) = records.iter().rposition(|b| *b == b'\n') {
            records.truncate(end + 1);
        } else {
            records.clear();
        }
        Some((header.spool, records))
    }
    fn append(&self, base: Option<Position>, bytes: &[u8]) -> Result<()> {
        let write = || -> std::io::Result<()> {
            let mut fresh = std::fs::metadata(&self.path).map_or(true, |m| m.len() == 0);
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            if !fresh && self.read().is_none() {
                // A crash in the spool's first write left a torn header: nothing in it was
                // acknowledged. Start the spool again.
                f.set_len(0)?;
                fresh = true;
            }
            let mut f = f;
            let mut buf = Vec::new();
            if fresh {
                buf.extend(serde_json::to_vec(&SpoolHeader { spool: base })?);
                buf.push(b'\n');
            }
            buf.extend_from_slice(bytes);
            f.write_all(&buf)?;
            f.sync_data()
        };
        write().map_err(|e| {
            color_eyre::eyre::eyre!("cannot write the spool {}: {e}", self.path.display())
        })
    }
    fn clear(&self) -> Result<()> {
        match File::options().write(true).open(&self.path) {
            Ok(f) => {
                f.set_len(0)?;
                f.sync_data()?;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
    /// Set it aside (the backend moved on without it).
    fn reject(&self) -> PathBuf {
        let to = self.path.with_file_name(format!(
            "spool.rejected-{}-{}.jsonl",
            jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S%.fZ"),
            std::process::id()
        ));
        let _ = std::fs::rename(&self.path, &to);
        to
    }
}

/// The state in a namespace of a cluster.
pub struct KubeStore {
    conn: Conn,
    pub loc: Location,
    plan: String,
    spool: Spool,
    pending: Vec<u8>,
    position: Option<Position>,
    /// The backend could not be reached: not before this instant again.
    retry_at: Option<Instant>,
    lost: Arc<Lost>,
    locked: bool,
}

impl KubeStore {
    /// Connect (reads the kubeconfig; nothing is sent yet).
    pub fn open(loc: &Location, state_dir: &Path, plan: &str, lost: Arc<Lost>) -> Result<Self> {
        super::journal::ensure_private_dir(state_dir)?;
        Ok(KubeStore {
            conn: Conn::open(loc, lost.clone())?,
            loc: loc.clone(),
            plan: plan.to_string(),
            spool: Spool {
                path: state_dir.join("spool.jsonl"),
            },
            pending: Vec::new(),
            position: None,
            retry_at: None,
            lost,
            locked: false,
        })
    }

    /// The head: which plan's state is here and its generation (None: no state here).
    pub fn head(&self) -> Result<Option<(String, u64)>> {
        self.conn.call(|w: &mut Worker| {
            Box::pin(async move { Ok(w.remote.head().await?.map(|h| (h.plan, h.generation))) })
        })
    }

    pub fn ensure_namespace(&self) -> Result<()> {
        self.conn
            .call(|w: &mut Worker| Box::pin(async move { w.remote.ensure_namespace().await }))
    }

    /// Who holds the lock, and whether that lease has expired.
    pub fn holder(&self) -> Result<Option<(Holder, bool)>> {
        self.conn
            .call(|w: &mut Worker| Box::pin(async move { w.remote.holder().await }))
    }

    /// Take the lock and keep it renewed; then send what an earlier run from this machine left in
    /// the spool (if the backend did not move on without it).
    pub fn lock(&mut self, me: &Holder) -> Result<Acquired> {
        let me = me.clone();
        let seconds = self.loc.lease_seconds;
        let got = self.conn.call(move |w: &mut Worker| {
            Box::pin(async move {
                let got = w.remote.acquire(&me).await?;
                if matches!(got, Acquired::Taken { .. }) {
                    let task = tokio::spawn(renew(w.remote.renewer(), w.lost.clone(), seconds));
                    w.renewal = Some(task.abort_handle());
                }
                Ok(got)
            })
        })?;
        if matches!(got, Acquired::Taken { .. }) {
            self.locked = true;
        }
        Ok(got)
    }

    /// Give the lock up.
    pub fn unlock(&mut self) {
        if !std::mem::take(&mut self.locked) {
            return;
        }
        let r = self.conn.call(|w: &mut Worker| {
            Box::pin(async move {
                if let Some(t) = w.renewal.take() {
                    t.abort();
                }
                w.remote.release().await
            })
        });
        if let Err(e) = r {
            tracing::warn!("{e:#}");
        }
    }

    /// Load the backend's journal (and where it ends). None: no state here.
    fn fetch(&mut self) -> Result<Option<(String, State, usize)>> {
        let (found, position) = self.conn.call(|w: &mut Worker| {
            Box::pin(async move {
                let found = w.remote.load().await?;
                Ok((found.map(|(h, s, n)| (h.plan, s, n)), w.remote.position()))
            })
        })?;
        self.position = position;
        Ok(found)
    }

    /// Send the spool an earlier run from this machine left, if the backend's journal still ends
    /// where it did then; else set it aside and say so. Returns how many records went.
    pub fn send_spool(&mut self) -> Result<usize> {
        // Where the journal ends now: what this run's records are written after.
        self.fetch()?;
        let Some((base, records)) = self.spool.read() else {
            // Nothing, or a torn header (never acknowledged): start afresh.
            self.spool.clear()?;
            return Ok(0);
        };
        if records.is_empty() {
            self.spool.clear()?;
            return Ok(0);
        }
        let n = records.iter().filter(|b| **b == b'\n').count();
        if base.is_some() && base == self.position {
            self.append_remote(records)?;
            self.spool.clear()?;
            eprintln!(
                "note: sent {n} record(s) an earlier run from this machine could not send to {}",
                self.loc
            );
            Ok(n)
        } else {
            let to = self.spool.reject();
            eprintln!(
                "warning: {n} record(s) an earlier run from this machine could not send were not sent: the state in {} moved on since (another run took over); they are kept in {}",
                self.loc,
                to.display()
            );
            Ok(0)
        }
    }

    fn append_remote(&mut self, bytes: Vec<u8>) -> Result<()> {
        let position = self.conn.call(move |w: &mut Worker| {
            Box::pin(async move {
                let r = w.remote.append(&bytes).await;
                if let Some(by) = w.remote.lost_to.take() {
                    w.lost.set(format!("the lock was taken over by {by}"));
                }
                r?;
                Ok(w.remote.position())
            })
        })?;
        self.position = position;
        Ok(())
    }

    /// Replace the backend's journal with one snapshot of `state` (creating the state there).
    pub fn rewrite(&mut self, state: &State) -> Result<()> {
        let state = state.clone();
        let plan = self.plan.clone();
        let position = self.conn.call(move |w: &mut Worker| {
            Box::pin(async move {
                w.remote.rewrite(&plan, &state).await?;
                Ok(w.remote.position())
            })
        })?;
        self.position = position;
        Ok(())
    }

    /// Delete every object of the state.
    pub fn delete_all(&self) -> Result<()> {
        self.conn
            .call(|w: &mut Worker| Box::pin(async move { w.remote.delete_all().await }))
    }

    /// The last run's report: (run id, host, markdown).
    pub fn report(&self) -> Result<Option<(String, String, String)>> {
        self.conn
            .call(|w: &mut Worker| Box::pin(async move { w.remote.report().await }))
    }

    /// The end of a run: keep sending until the spool is empty, for at most one lease (the lock
    /// is still ours meanwhile). Returns the records still unsent; while there are any, the lock
    /// is not given up (it expires by itself, and the next run from this machine sends them).
    fn drain_spool(&mut self) -> usize {
        let end = Instant::now() + Duration::from_secs(u64::from(self.loc.lease_seconds));
        loop {
            self.retry_at = None;
            self.send();
            let left = Store::unsent(self);
            if left == 0 || self.lost.is_set() || Instant::now() >= end {
                if left > 0 {
                    // Never clear the holder while records are only here.
                    self.locked = false;
                }
                return left;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Send the spool now, unless the lock is lost or the backend was just unreachable.
    fn send(&mut self) {
        if self.lost.is_set() || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let Some((_, records)) = self.spool.read() else {
            return;
        };
        if records.is_empty() {
            return;
        }
        match self.append_remote(records) {
            Ok(()) => {
                if let Err(e) = self.spool.clear() {
                    tracing::warn!("{e:#}");
                }
                self.retry_at = None;
            }
            Err(e) => {
                if self.lost.is_set() {
                    eprintln!(
                        "warning: {e:#}; this run's later records stay in {} and will not be sent over the new holder's",
                        self.spool.path.display()
                    );
                } else if self.retry_at.is_none() {
                    eprintln!(
                        "warning: {e:#}; records are kept in {} until it can be reached",
                        self.spool.path.display()
                    );
                }
                self.retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }
}

impl Drop for KubeStore {
    fn drop(&mut self) {
        self.unlock();
    }
}

impl Store for KubeStore {
    fn write(&mut self, rec: &Record) -> Result<()> {
        self.pending.extend(serde_json::to_vec(rec)?);
        self.pending.push(b'\n');
        Ok(())
    }

    /// Durable on this machine first (the spool, fsync'd), then sent.
    fn sync(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            let bytes = std::mem::take(&mut self.pending);
            self.spool.append(self.position, &bytes)?;
        }
        self.send();
        Ok(())
    }

    fn load(&self) -> Result<State> {
        let (found, position) = self.conn.call(|w: &mut Worker| {
            Box::pin(async move {
                let found = w.remote.load().await?.map(|(_, s, _)| s);
                Ok((found, w.remote.position()))
            })
        })?;
        let mut state = found.unwrap_or_default();
        // What this machine recorded and could not send yet is known too, while the journal still
        // ends where those records were written after (else the next run sets them aside).
        if let Some((base, records)) = self.spool.read()
            && !records.is_empty()
        {
            if base.is_some() && base == position {
                super::journal::fold(&mut state, &records, &self.spool.path, 1);
            } else {
                eprintln!(
                    "warning: {} holds records the state in {} moved on from; the next run sets them aside",
                    self.spool.path.display(),
                    self.loc
                );
            }
        }
        Ok(state)
    }

    fn close(&mut self) -> usize {
        self.drain_spool()
    }

    fn compact(&mut self) -> Result<(u64, u64)> {
        let Some((_, state, records)) = self.fetch()? else {
            return Ok((0, 0));
        };
        if records > 1 {
            self.rewrite(&state)?;
        }
        Ok((records as u64, 1))
    }

    fn keep_report(&mut self, run_id: &str, markdown: &str) {
        if self.lost.is_set() {
            return;
        }
        let (run_id, markdown, host) =
            (run_id.to_string(), markdown.to_string(), super::hostname());
        let r = self.conn.call(move |w: &mut Worker| {
            Box::pin(async move { w.remote.put_report(&run_id, &host, &markdown).await })
        });
        if let Err(e) = r {
            eprintln!("warning: the run report was not kept in the backend: {e:#}");
        }
    }

    fn describe(&self) -> String {
        self.loc.to_string()
    }

    fn conflicts(&self) -> u32 {
        self.conn
            .call(|w: &mut Worker| Box::pin(async move { Ok(w.remote.conflicts) }))
            .unwrap_or(0)
    }

    fn unsent(&self) -> usize {
        self.spool
            .read()
            .map_or(0, |(_, r)| r.iter().filter(|b| **b == b'\n').count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(len: usize) -> Option<Position> {
        Some(Position {
            generation: 1,
            chunk: 0,
            len,
        })
    }

    #[test]
    fn a_spool_keeps_its_base_and_records_and_drops_a_torn_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool {
            path: dir.path().join("spool.jsonl"),
        };
        spool.append(pos(10), b"{\"a\":1}\n").unwrap();
        spool.append(pos(99), b"{\"b\":2}\n").unwrap();
        let (base, records) = spool.read().unwrap();
        assert_eq!(base, pos(10), "the base is the first write's");
        assert_eq!(records, b"{\"a\":1}\n{\"b\":2}\n");
        // A crash mid-append: the torn record was never acknowledged.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&spool.path)
            .unwrap()
            .write_all(b"{\"c\":")
            .unwrap();
        assert_eq!(spool.read().unwrap().1, b"{\"a\":1}\n{\"b\":2}\n");
    }

    #[test]
    fn a_spool_whose_first_write_was_torn_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool {
            path: dir.path().join("spool.jsonl"),
        };
        std::fs::write(&spool.path, b"{\"spo").unwrap();
        assert!(spool.read().is_none());
        spool.append(pos(5), b"{\"a\":1}\n").unwrap();
        let (base, records) = spool.read().unwrap();
        assert_eq!(base, pos(5));
        assert_eq!(records, b"{\"a\":1}\n");
    }
}
