//! The Kubernetes backend's objects, spoken to asynchronously: the journal and the last run's report
//! in Secrets, the run lock in a `coordination.k8s.io/v1` Lease, all in one namespace.
//!
//! Objects (labelled `app.kubernetes.io/managed-by: bootstrap`):
//! - Secret `bootstrap-state`, the head: annotations name the plan and the current generation.
//! - Secrets `bootstrap-state-g<generation>-<n>`: the journal of a generation, one byte stream of
//!   JSON lines (the local journal's format) cut into chunks of at most [`CHUNK_BYTES`], or
//!   [`PART_BYTES`] for the snapshot that opens a generation. Compaction writes generation g+1,
//!   switches the head (a resourceVersion-checked write: the commit point), then deletes the others.
//! - Secret `bootstrap-report`: the last run's markdown report and the host it ran on.
//! - Lease `bootstrap-lock`: who runs ([`Holder`] in an annotation, `renewTime`, duration).
//!
//! Every write carries the resourceVersion last read (optimistic concurrency). A 409 re-reads and
//! applies the change again, after checking that the lease is still ours: never two writers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};

use super::{Holder, Record, State};
use crate::error::Result;

pub const HEAD: &str = "bootstrap-state";
pub const REPORT: &str = "bootstrap-report";
pub const LEASE: &str = "bootstrap-lock";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const PLAN: &str = "bootstrap.dev/plan";
const GENERATION: &str = "bootstrap.dev/generation";
const PART: &str = "bootstrap.dev/journal";
const HOLDER: &str = "bootstrap.dev/holder";
const KEY: &str = "journal.jsonl";
/// A journal chunk is rewritten whole on every append, so it stays small.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// The snapshot that opens a generation is cut into parts this large (Secrets hold at most 1 MiB).
pub const PART_BYTES: usize = 512 * 1024;
/// Reports larger than this are cut (with a note) to fit in a Secret.
const REPORT_BYTES: usize = 768 * 1024;

/// Where the state lives in a cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Location {
    pub kubeconfig: PathBuf,
    pub context: String,
    pub namespace: String,
    pub lease_seconds: u32,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "namespace {} of kube context {} (kubeconfig {})",
            self.namespace,
            self.context,
            self.kubeconfig.display()
        )
    }
}

/// What the head says.
#[derive(Debug, Clone)]
pub struct Head {
    pub plan: String,
    pub generation: u64,
    rv: String,
}

/// The last chunk of the current generation, as last read or written.
#[derive(Debug, Clone)]
struct Tail {
    index: u32,
    rv: String,
    data: Vec<u8>,
}

/// Where the journal ends: what a spool of unsent records was written after.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Position {
    pub generation: u64,
    pub chunk: u32,
    pub len: usize,
}

/// The outcome of asking for the lock.
pub enum Acquired {
    /// Ours; with the previous holder when its lease had expired or its process is gone.
    Taken {
        took_over: Option<(Holder, String)>,
    },
    Held(Holder),
}

/// How a renewal went.
pub enum Renewal {
    Renewed,
    /// Someone else holds it now.
    Taken(Option<Holder>),
}

/// Whether the API server answered (an error status) rather than being unreachable.
pub fn answered(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(_))
}

/// A read, tried again (three times, 300 ms apart) when the API server did not answer: reads are
/// idempotent, and a connection cut for a moment (an API server restarting, a load balancer
/// failing over) should not fail a `status`.
async fn reading<T, Fut>(mut f: impl FnMut() -> Fut) -> std::result::Result<T, kube::Error>
where
    Fut: std::future::Future<Output = std::result::Result<T, kube::Error>>,
{
    let mut tries = 0;
    loop {
        match f().await {
            Err(e) if !answered(&e) && tries < 3 => {
                tries += 1;
                tracing::debug!("state backend: no answer ({e}); reading again");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            r => return r,
        }
    }
}

fn code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        _ => 0,
    }
}

fn wrap(what: &str, loc: &Location, e: kube::Error) -> color_eyre::Report {
    color_eyre::eyre::eyre!("state backend ({loc}): {what}: {e}")
}

fn labels(extra: &[(&str, String)]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::from([(MANAGED_BY.to_string(), "bootstrap".to_string())]);
    for (k, v) in extra {
        m.insert(k.to_string(), v.clone());
    }
    m
}

fn chunk_name(generation: u64, index: u32) -> String {
    format!("{HEAD}-g{generation}-{index:05}")
}

fn chunk(generation: u64, index: u32, data: &[u8], rv: Option<&str>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(chunk_name(generation, index)),
            labels: Some(labels(&[
                (PART, "chunk".into()),
                (GENERATION, generation.to_string()),
            ])),
            resource_version: rv.map(str::to_string),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(KEY.into(), ByteString(data.to_vec()))])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

fn index_of(s: &Secret) -> Option<u32> {
    s.metadata.name.as_deref()?.rsplit('-').next()?.parse().ok()
}

fn data_of(s: &Secret) -> Vec<u8> {
    s.data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .map(|b| b.0.clone())
        .unwrap_or_default()
}

fn rv_of(meta: &ObjectMeta) -> String {
    meta.resource_version.clone().unwrap_or_default()
}

/// The kube client for a location: its kubeconfig and context, with short timeouts (an
/// unreachable API server must show within the lease's duration).
pub async fn client(loc: &Location) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(&loc.kubeconfig).map_err(|e| {
        color_eyre::eyre::eyre!(
            "state backend: cannot read kubeconfig {}: {e}",
            loc.kubeconfig.display()
        )
    })?;
    let opts = kube::config::KubeConfigOptions {
        context: Some(loc.context.clone()),
        ..Default::default()
    };
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| {
            color_eyre::eyre::eyre!("state backend: kube context {:?}: {e}", loc.context)
        })?;
    let limit = Duration::from_secs(u64::from(loc.lease_seconds.clamp(3, 30)) / 3)
        .max(Duration::from_secs(1));
    cfg.connect_timeout = Some(limit);
    cfg.read_timeout = Some(limit * 2);
    cfg.write_timeout = Some(limit * 2);
    cfg.reset_reader_on_write = true;
    Ok(kube::Client::try_from(cfg)?)
}

/// The backend's objects in one namespace.
pub struct Remote {
    pub loc: Location,
    secrets: Api<Secret>,
    leases: Api<Lease>,
    namespaces: Api<Namespace>,
    generation: Option<u64>,
    tail: Option<Tail>,
    /// Our identity in the Lease, once we hold it.
    me: Option<String>,
    /// How many writes lost a resourceVersion race and were applied again.
    pub conflicts: u32,
    /// Set when a write found the lock held by someone else (who).
    pub lost_to: Option<String>,
}

impl Remote {
    pub async fn connect(loc: &Location) -> Result<Remote> {
        let c = client(loc).await?;
        Ok(Remote {
            loc: loc.clone(),
            secrets: Api::namespaced(c.clone(), &loc.namespace),
            leases: Api::namespaced(c.clone(), &loc.namespace),
            namespaces: Api::all(c),
            generation: None,
            tail: None,
            me: None,
            conflicts: 0,
            lost_to: None,
        })
    }

    /// Create the namespace if it is missing.
    pub async fn ensure_namespace(&self) -> Result<()> {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(self.loc.namespace.clone()),
                labels: Some(labels(&[])),
                ..Default::default()
            },
            ..Default::default()
        };
        let pp = PostParams::default();
        match reading(|| self.namespaces.create(&pp, &ns)).await {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == 409 => Ok(()),
            Err(e) => Err(wrap("creating the namespace", &self.loc, e)),
        }
    }

    pub async fn head(&self) -> Result<Option<Head>> {
        let s = reading(|| self.secrets.get_opt(HEAD))
            .await
            .map_err(|e| wrap("reading the head", &self.loc, e))?;
        Ok(s.map(|s| {
            let ann = s.metadata.annotations.clone().unwrap_or_default();
            Head {
                plan: ann.get(PLAN).cloned().unwrap_or_default(),
                generation: ann
                    .get(GENERATION)
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(0),
                rv: rv_of(&s.metadata),
            }
        }))
    }

    /// The chunks of one generation (or of every generation), in order.
    async fn chunks(&self, generation: Option<u64>) -> Result<Vec<Secret>> {
        let mut sel = format!("{MANAGED_BY}=bootstrap,{PART}=chunk");
        if let Some(g) = generation {
            sel.push_str(&format!(",{GENERATION}={g}"));
        }
        let params = ListParams::default().labels(&sel);
        let list = reading(|| self.secrets.list(&params))
            .await
            .map_err(|e| wrap("listing the journal", &self.loc, e))?;
        let mut items = list.items;
        items.sort_by_key(|s| index_of(s).unwrap_or(0));
        Ok(items)
    }

    /// Everything recorded: the head's generation, folded. None when the backend holds no state.
    pub async fn load(&mut self) -> Result<Option<(Head, State, usize)>> {
        let Some(head) = self.head().await? else {
            self.generation = None;
            self.tail = None;
            return Ok(None);
        };
        let chunks = self.chunks(Some(head.generation)).await?;
        let mut text = Vec::new();
        for c in &chunks {
            text.extend(data_of(c));
        }
        self.tail = chunks.last().map(|c| Tail {
            index: index_of(c).unwrap_or(0),
            rv: rv_of(&c.metadata),
            data: data_of(c),
        });
        self.generation = Some(head.generation);
        let mut state = State::default();
        let name = format!("{}/{HEAD}", self.loc.namespace);
        super::journal::fold(&mut state, &text, std::path::Path::new(&name), 0);
        let records = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        Ok(Some((head, state, records)))
    }

    /// Where the journal ends now (after [`Remote::load`] or an append).
    pub fn position(&self) -> Option<Position> {
        Some(Position {
            generation: self.generation?,
            chunk: self.tail.as_ref().map_or(0, |t| t.index),
            len: self.tail.as_ref().map_or(0, |t| t.data.len()),
        })
    }

    /// The last chunk as the server has it now.
    async fn reread_tail(&mut self) -> Result<()> {
        let generation = self.generation.unwrap_or(0);
        let chunks = self.chunks(Some(generation)).await?;
        self.tail = chunks.last().map(|c| Tail {
            index: index_of(c).unwrap_or(0),
            rv: rv_of(&c.metadata),
            data: data_of(c),
        });
        Ok(())
    }

    /// After a lost race: is the lease still ours? (A 409 from someone else's takeover must not be
    /// retried over: never two writers.)
    async fn still_ours(&mut self) -> Result<()> {
        let Some(me) = &self.me else { return Ok(()) };
        let lease = self
            .leases
            .get_opt(LEASE)
            .await
            .map_err(|e| wrap("reading the lock", &self.loc, e))?;
        let holder = lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .unwrap_or_default();
        if &holder != me {
            self.lost_to = Some(if holder.is_empty() {
                "nobody (it was released)".to_string()
            } else {
                holder.clone()
            });
            return Err(color_eyre::eyre::eyre!(
                "state backend ({}): the lock is held by {holder:?} now, not by this run; not writing",
                self.loc
            ));
        }
        Ok(())
    }

    /// Append journal bytes (whole lines) to the current generation, in pieces that keep every
    /// chunk under [`CHUNK_BYTES`] (a line longer than that gets a chunk of its own).
    pub async fn append(&mut self, bytes: &[u8]) -> Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let mut cut = 0;
            for (i, b) in rest.iter().enumerate() {
                if *b == b'\n' {
                    if i + 1 > CHUNK_BYTES && cut > 0 {
                        break;
                    }
                    cut = i + 1;
                }
            }
            if cut == 0 {
                cut = rest.len();
            }
            self.append_piece(&rest[..cut]).await?;
            rest = &rest[cut..];
        }
        Ok(())
    }

    async fn append_piece(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let Some(generation) = self.generation else {
            return Err(color_eyre::eyre::eyre!(
                "state backend ({}): no state here yet (migrate to it first)",
                self.loc
            ));
        };
        let pp = PostParams::default();
        for _ in 0..8 {
            let fits = self
                .tail
                .as_ref()
                .is_some_and(|t| t.data.len() + bytes.len() <= CHUNK_BYTES);
            let (index, data, result) = if fits {
                let t = self.tail.clone().expect("fits");
                let mut data = t.data;
                data.extend_from_slice(bytes);
                let s = chunk(generation, t.index, &data, Some(&t.rv));
                let r = self
                    .secrets
                    .replace(&chunk_name(generation, t.index), &pp, &s)
                    .await;
                (t.index, data, r)
            } else {
                let index = self.tail.as_ref().map_or(0, |t| t.index + 1);
                let s = chunk(generation, index, bytes, None);
                (index, bytes.to_vec(), self.secrets.create(&pp, &s).await)
            };
            match result {
                Ok(s) => {
                    self.tail = Some(Tail {
                        index,
                        rv: rv_of(&s.metadata),
                        data,
                    });
                    return Ok(());
                }
                Err(e) if code(&e) == 409 => {
                    // Someone wrote the chunk since we read it: read it again, check the lock is
                    // still ours, and append to what is there now.
                    self.conflicts += 1;
                    tracing::info!(
                        "state backend: {} lost a resourceVersion race; reading it again",
                        chunk_name(generation, index)
                    );
                    self.still_ours().await?;
                    self.reread_tail().await?;
                    // Our own earlier write whose answer was lost, if the chunk ends with it.
                    if self.tail.as_ref().is_some_and(|t| t.data.ends_with(bytes)) {
                        return Ok(());
                    }
                }
                Err(e) if code(&e) == 404 => {
                    // The chunk is gone: the state was rewritten by someone else (a takeover and
                    // its compaction). Never write into a generation that is not the head's.
                    self.still_ours().await?;
                    return Err(wrap("appending to the journal", &self.loc, e));
                }
                Err(e) if !answered(&e) => {
                    // The write may or may not have landed: look before trying again, so a record
                    // is never written twice.
                    self.reread_tail()
                        .await
                        .map_err(|_| wrap("appending to the journal", &self.loc, e))?;
                    if self
                        .tail
                        .as_ref()
                        .is_some_and(|t| t.index == index && t.data == data)
                    {
                        return Ok(());
                    }
                }
                Err(e) => return Err(wrap("appending to the journal", &self.loc, e)),
            }
        }
        Err(color_eyre::eyre::eyre!(
            "state backend ({}): gave up appending after 8 lost races",
            self.loc
        ))
    }

    /// Replace the journal with one snapshot of `state` (a new generation), for `plan`. Creates
    /// the head when there is none. The head's resourceVersion-checked write is the commit point:
    /// a crash before it leaves the old generation in force.
    pub async fn rewrite(&mut self, plan: &str, state: &State) -> Result<()> {
        let head = self.head().await?;
        let generation = head.as_ref().map_or(1, |h| h.generation + 1);
        // Parts of this generation left by a rewrite that died before its commit.
        self.delete_chunks(|g| g == generation).await?;
        let mut line = serde_json::to_vec(&Record::Snapshot {
            at: super::now(),
            state: Box::new(state.clone()),
        })?;
        line.push(b'\n');
        let pp = PostParams::default();
        let mut tail = None;
        for (i, part) in line.chunks(PART_BYTES).enumerate() {
            let s = self
                .create_once(&chunk(generation, i as u32, part, None))
                .await
                .map_err(|e| wrap("writing the snapshot", &self.loc, e))?;
            tail = Some(Tail {
                index: i as u32,
                rv: rv_of(&s.metadata),
                data: part.to_vec(),
            });
        }
        let mut h = Secret {
            metadata: ObjectMeta {
                name: Some(HEAD.into()),
                labels: Some(labels(&[])),
                annotations: Some(BTreeMap::from([
                    (PLAN.to_string(), plan.to_string()),
                    (GENERATION.to_string(), generation.to_string()),
                ])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        let committed = match &head {
            None => self.secrets.create(&pp, &h).await,
            Some(old) => {
                h.metadata.resource_version = Some(old.rv.clone());
                self.secrets.replace(HEAD, &pp, &h).await
            }
        };
        let committed = match committed {
            // No answer: the switch may have landed; the head says.
            Err(e) if !answered(&e) => match self.head().await {
                Ok(Some(h)) if h.generation == generation => Ok(Secret::default()),
                _ => Err(e),
            },
            other => other,
        };
        committed.map_err(|e| {
            if code(&e) == 409 {
                color_eyre::eyre::eyre!(
                    "state backend ({}): the state changed while it was being rewritten (another writer?); nothing was replaced",
                    self.loc
                )
            } else {
                wrap("switching the head", &self.loc, e)
            }
        })?;
        self.generation = Some(generation);
        self.tail = tail;
        // Committed: chunks of other generations are garbage now (deleted again next time).
        if let Err(e) = self.delete_chunks(|g| g != generation).await {
            tracing::warn!("{e:#}");
        }
        Ok(())
    }

    /// Create a Secret, trying again when the API server did not answer; a retry that finds it
    /// already there with our data is our own earlier write.
    async fn create_once(&self, s: &Secret) -> std::result::Result<Secret, kube::Error> {
        let name = s.metadata.name.clone().unwrap_or_default();
        let mut tries = 0;
        loop {
            match self.secrets.create(&PostParams::default(), s).await {
                Err(e) if !answered(&e) && tries < 3 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) if code(&e) == 409 && tries > 0 => {
                    let there = reading(|| self.secrets.get_opt(&name)).await?;
                    match there {
                        Some(t) if t.data == s.data => return Ok(t),
                        _ => return Err(e),
                    }
                }
                r => return r,
            }
        }
    }

    async fn delete_chunks(&self, which: impl Fn(u64) -> bool) -> Result<()> {
        for c in self.chunks(None).await? {
            let g = c
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(GENERATION))
                .and_then(|g| g.parse().ok())
                .unwrap_or(0);
            if which(g) {
                let name = c.metadata.name.clone().unwrap_or_default();
                match self.secrets.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if code(&e) == 404 => {}
                    Err(e) => return Err(wrap("deleting an old journal chunk", &self.loc, e)),
                }
            }
        }
        Ok(())
    }

    /// Delete every object of the state (after it moved elsewhere).
    pub async fn delete_all(&self) -> Result<()> {
        self.delete_chunks(|_| true).await?;
        for name in [HEAD, REPORT] {
            match self.secrets.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if code(&e) == 404 => {}
                Err(e) => return Err(wrap("deleting the state", &self.loc, e)),
            }
        }
        Ok(())
    }

    /// Keep the run's markdown report (cut to fit a Secret), with the host that ran it.
    pub async fn put_report(&self, run_id: &str, host: &str, markdown: &str) -> Result<()> {
        let mut text = markdown.to_string();
        if text.len() > REPORT_BYTES {
            let mut cut = REPORT_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(&format!(
                "\n\n(cut at {REPORT_BYTES} bytes to fit in a Secret; the whole report is on {host})\n"
            ));
        }
        let mut s = Secret {
            metadata: ObjectMeta {
                name: Some(REPORT.into()),
                labels: Some(labels(&[])),
                annotations: Some(BTreeMap::from([
                    ("bootstrap.dev/run-id".to_string(), run_id.to_string()),
                    ("bootstrap.dev/host".to_string(), host.to_string()),
                ])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "report.md".to_string(),
                ByteString(text.into_bytes()),
            )])),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        let pp = PostParams::default();
        for _ in 0..4 {
            let r = match self.secrets.get_opt(REPORT).await {
                Ok(Some(old)) => {
                    s.metadata.resource_version = old.metadata.resource_version;
                    self.secrets.replace(REPORT, &pp, &s).await
                }
                Ok(None) => {
                    s.metadata.resource_version = None;
                    self.secrets.create(&pp, &s).await
                }
                Err(e) => Err(e),
            };
            match r {
                Ok(_) => return Ok(()),
                Err(e) if code(&e) == 409 => continue,
                Err(e) => return Err(wrap("writing the report", &self.loc, e)),
            }
        }
        Ok(())
    }

    /// The last run's report: (run id, host, markdown).
    pub async fn report(&self) -> Result<Option<(String, String, String)>> {
        let s = reading(|| self.secrets.get_opt(REPORT))
            .await
            .map_err(|e| wrap("reading the report", &self.loc, e))?;
        Ok(s.map(|s| {
            let ann = s.metadata.annotations.clone().unwrap_or_default();
            let md = s
                .data
                .as_ref()
                .and_then(|d| d.get("report.md"))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .unwrap_or_default();
            (
                ann.get("bootstrap.dev/run-id").cloned().unwrap_or_default(),
                ann.get("bootstrap.dev/host").cloned().unwrap_or_default(),
                md,
            )
        }))
    }

    /// The lock's holder now, if its lease is held and not expired.
    pub async fn holder(&self) -> Result<Option<(Holder, bool)>> {
        let lease = reading(|| self.leases.get_opt(LEASE))
            .await
            .map_err(|e| wrap("reading the lock", &self.loc, e))?;
        Ok(lease.and_then(|l| {
            let (h, expired) = holder_of(&l)?;
            Some((h, expired))
        }))
    }

    /// Take the lock for `me`, or say who holds it. A holder whose lease expired (not renewed for
    /// its duration) or whose process on this host is gone is taken over.
    pub async fn acquire(&mut self, me: &Holder) -> Result<Acquired> {
        let identity = identity(me);
        let pp = PostParams::default();
        for _ in 0..8 {
            let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
            let existing = reading(|| self.leases.get_opt(LEASE))
                .await
                .map_err(|e| wrap("reading the lock", &self.loc, e))?;
            let mut took_over = None;
            let mut lease = match existing {
                None => Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE.into()),
                        labels: Some(labels(&[])),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                },
                Some(l) => {
                    let ours = l
                        .spec
                        .as_ref()
                        .and_then(|s| s.holder_identity.as_ref())
                        .is_some_and(|h| h == &identity);
                    if ours {
                        // Our own earlier write, whose answer was lost.
                        self.me = Some(identity);
                        return Ok(Acquired::Taken { took_over: None });
                    }
                    if let Some((h, expired)) = holder_of(&l) {
                        let gone = h.host == super::hostname()
                            && h.machine == super::machine_id()
                            && h.pid != std::process::id()
                            && !super::pid_alive(h.pid);
                        if expired {
                            took_over = Some((h, "its lease expired".to_string()));
                        } else if gone {
                            took_over = Some((h, "its process is gone".to_string()));
                        } else {
                            return Ok(Acquired::Held(h));
                        }
                    }
                    l
                }
            };
            let create = lease.metadata.resource_version.is_none();
            let spec = lease.spec.get_or_insert_with(Default::default);
            let transitions = spec.lease_transitions.unwrap_or(0);
            spec.holder_identity = Some(identity.clone());
            spec.lease_duration_seconds = Some(self.loc.lease_seconds as i32);
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            if !create {
                spec.lease_transitions = Some(transitions + 1);
            }
            lease
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(HOLDER.into(), serde_json::to_string(me)?);
            let r = if create {
                self.leases.create(&pp, &lease).await
            } else {
                self.leases.replace(LEASE, &pp, &lease).await
            };
            match r {
                Ok(_) => {
                    self.me = Some(identity);
                    return Ok(Acquired::Taken { took_over });
                }
                Err(e) if code(&e) == 409 => continue,
                // No answer: it may have landed; the next round reads the lease again.
                Err(e) if !answered(&e) => tokio::time::sleep(Duration::from_millis(300)).await,
                Err(e) => return Err(wrap("taking the lock", &self.loc, e)),
            }
        }
        Err(color_eyre::eyre::eyre!(
            "state backend ({}): the lock kept changing while this run tried to take it",
            self.loc
        ))
    }

    /// Renew the lease (it must still be ours).
    pub async fn renew(&self) -> std::result::Result<Renewal, kube::Error> {
        let Some(me) = &self.me else {
            return Ok(Renewal::Renewed);
        };
        for _ in 0..4 {
            let Some(mut l) = self.leases.get_opt(LEASE).await? else {
                return Ok(Renewal::Taken(None));
            };
            let spec = l.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_ref() != Some(me) {
                return Ok(Renewal::Taken(holder_of(&l).map(|(h, _)| h)));
            }
            spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
            match self.leases.replace(LEASE, &PostParams::default(), &l).await {
                Ok(_) => return Ok(Renewal::Renewed),
                Err(e) if code(&e) == 409 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(kube::Error::Api(Box::new(kube::core::Status {
            code: 409,
            reason: "Conflict".into(),
            message: "the lease kept changing under its renewal".into(),
            ..Default::default()
        })))
    }

    /// Give the lock up, if it is still ours.
    pub async fn release(&mut self) -> Result<()> {
        let Some(me) = self.me.take() else {
            return Ok(());
        };
        for _ in 0..4 {
            let Some(mut l) = self
                .leases
                .get_opt(LEASE)
                .await
                .map_err(|e| wrap("reading the lock", &self.loc, e))?
            else {
                return Ok(());
            };
            let spec = l.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_ref() != Some(&me) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
            if let Some(a) = l.metadata.annotations.as_mut() {
                a.remove(HOLDER);
            }
            match self.leases.replace(LEASE, &PostParams::default(), &l).await {
                Ok(_) => return Ok(()),
                Err(e) if code(&e) == 409 => continue,
                Err(e) => return Err(wrap("releasing the lock", &self.loc, e)),
            }
        }
        Ok(())
    }

    /// A handle for renewing from another task.
    pub fn renewer(&self) -> Remote {
        Remote {
            loc: self.loc.clone(),
            secrets: self.secrets.clone(),
            leases: self.leases.clone(),
            namespaces: self.namespaces.clone(),
            generation: None,
            tail: None,
            me: self.me.clone(),
            conflicts: 0,
            lost_to: None,
        }
    }
}

/// A holder's identity in the Lease: host, pid and run id.
fn identity(h: &Holder) -> String {
    format!("{}/{}/{}", h.host, h.pid, h.run_id)
}

/// The lease's holder and whether its lease has expired (not renewed for its duration).
fn holder_of(l: &Lease) -> Option<(Holder, bool)> {
    let spec = l.spec.as_ref()?;
    let id = spec.holder_identity.clone().filter(|s| !s.is_empty())?;
    let holder = l
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HOLDER))
        .and_then(|h| serde_json::from_str::<Holder>(h).ok())
        .unwrap_or_else(|| {
            let mut parts = id.splitn(3, '/');
            Holder {
                host: parts.next().unwrap_or_default().to_string(),
                pid: parts.next().and_then(|p| p.parse().ok()).unwrap_or(0),
                run_id: parts.next().unwrap_or_default().to_string(),
                started: String::new(),
                machine: String::new(),
            }
        });
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(30));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let expired = renewed.is_none_or(|t| {
        t.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(duration))
            .is_ok_and(|end| end < k8s_openapi::jiff::Timestamp::now())
    });
    Some((holder, expired))
}
