//! Serving connections, and the `api-unreachable` outage: for its window the server is as
//! unreachable as a real control plane that is down. The listening socket is closed, so a new
//! connection is refused (`ECONNREFUSED`: kubectl says `The connection to the server
//! 127.0.0.1:PORT was refused - did you specify the right host or port?`, the kube client a hyper
//! connect error, "tcp connect error: Connection refused"), and every open connection, idle
//! keep-alive ones in a client's pool and watches alike, is closed without an answer, as when the
//! server process dies. After the window the same address is bound again. The store is untouched:
//! a write is acknowledged only once it is in the write-ahead log, so none is lost.
//!
//! The outage comes from `outages.json` in the lab directory (`core::start_outage`), written by
//! other processes (a stand-in whose fault fired, `bootstrap lab outage`); [`watch`] polls it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::core::{self, LabDir};

/// How often the outage file is read.
const POLL: Duration = Duration::from_millis(100);

/// Wait until `pred` holds for the channel's value; never returns when the sender is gone.
async fn wait_until<T>(rx: &mut watch::Receiver<T>, pred: impl FnMut(&T) -> bool) {
    if rx.wait_for(pred).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Publish this cluster's outage (`Some(until epoch ms)` while it lasts) every [`POLL`].
pub(super) async fn watch(lab: Option<LabDir>, cluster: String, tx: watch::Sender<Option<u64>>) {
    let Some(dir) = lab else {
        // A bare server never goes down; keep the sender so the receivers wait.
        std::future::pending::<()>().await;
        return;
    };
    loop {
        let until = core::read_json::<std::collections::BTreeMap<String, u64>>(&dir.outages())
            .ok()
            .flatten()
            .and_then(|m| m.get(&cluster).copied())
            .filter(|u| *u > core::now_ms());
        tx.send_if_modified(|cur| {
            if *cur != until {
                *cur = until;
                true
            } else {
                false
            }
        });
        tokio::time::sleep(POLL).await;
    }
}

/// Accept and serve connections until shutdown; during an outage, serve nothing at all.
/// `ack`: where to record that an outage is in force (`outages-applied.json`), so that whoever
/// started it can wait for it.
pub(super) async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    app: axum::Router,
    mut down: watch::Receiver<Option<u64>>,
    mut shutdown: watch::Receiver<bool>,
    ack: Option<(LabDir, String)>,
) {
    let mut conns = tokio::task::JoinSet::new();
    let mut listener = Some(listener);
    loop {
        let outage = *down.borrow_and_update();
        if let Some(until) = outage {
            // Down: no listening socket, every connection closed (each task sees the same signal).
            drop(listener.take());
            while conns.join_next().await.is_some() {}
            if let Some((dir, cluster)) = &ack {
                let _ = core::update_json(
                    dir,
                    &dir.outages_applied(),
                    |m: &mut std::collections::BTreeMap<String, u64>| {
                        m.insert(cluster.clone(), until);
                    },
                );
            }
            tokio::select! {
                _ = wait_until(&mut down, |d| d.is_none_or(|u| u != until)) => {}
                _ = wait_until(&mut shutdown, |s| *s) => return,
            }
            continue;
        }
        let Some(l) = &listener else {
            // Up again: the same address, as a restarted API server.
            match TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    tracing::warn!("lab: cannot listen on {addr} again yet: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(POLL) => {}
                        _ = wait_until(&mut shutdown, |s| *s) => return,
                    }
                }
            }
            continue;
        };
        tokio::select! {
            r = l.accept() => {
                let Ok((stream, _)) = r else { continue };
                let _ = stream.set_nodelay(true);
                let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                let mut down = down.clone();
                let mut shutdown = shutdown.clone();
                conns.spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .with_upgrades();
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        // Cut: the connection is dropped, unanswered.
                        _ = wait_until(&mut down, |d| d.is_some()) => {}
                        _ = wait_until(&mut shutdown, |s| *s) => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            Ok(()) = down.changed() => {}
            _ = wait_until(&mut shutdown, |s| *s) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}
