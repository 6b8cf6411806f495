//! Transform state in PostgreSQL, one row per (route, key), shared by the
//! nodes: a Jitbit ticket made by one node is found by the next update of
//! its alert on any other (that update is claimed only after this one's
//! finish, which follows the state's commit).
//!
//! The [`TransformState`] interface is synchronous (the flow calls it on
//! tokio's blocking pool), while the connection is async: the state
//! has a thread of its own with a current-thread runtime and its own
//! connection (reconnected when lost), and callers wait on a reply
//! channel.  That works from any thread, a runtime's worker included.

use std::collections::BTreeMap;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::Client;

use super::Target;
use crate::store::{StateError, StoreError, TransformState};

/// How long a caller waits for an answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What the state thread is asked.
enum Request {
    Get(String, String, Reply<Option<String>>),
    Apply(String, BTreeMap<String, Option<String>>, Reply<()>),
    Dump(String, Reply<BTreeMap<String, String>>),
}

/// Where a request's answer goes.
type Reply<T> = std_mpsc::SyncSender<Result<T, StateError>>;

/// The handle callers use.
pub(crate) struct PgState {
    /// Requests for the state thread; it stops when this is dropped.
    requests: mpsc::UnboundedSender<Request>,
}

impl PgState {
    pub(super) fn start(target: Target, shown: String) -> Result<PgState, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::io("cannot start the transform-state runtime", e))?;
        std::thread::Builder::new()
            .name("ztbridge-pg-state".into())
            .spawn(move || rt.block_on(serve(target, shown, rx)))
            .map_err(|e| StoreError::io("cannot start the transform-state thread", e))?;
        Ok(PgState { requests: tx })
    }

    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, StateError> {
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.requests.send(make(tx)).map_err(|_| StateError {
            message: "the PostgreSQL state thread has stopped".into(),
            source: None,
        })?;
        rx.recv_timeout(TIMEOUT).unwrap_or_else(|_| {
            Err(StateError {
                message: format!("PostgreSQL did not answer within {} s", TIMEOUT.as_secs()),
                source: None,
            })
        })
    }
}

impl TransformState for PgState {
    fn get(&self, route: &str, key: &str) -> Result<Option<String>, StateError> {
        self.ask(|r| Request::Get(route.into(), key.into(), r))
    }

    fn apply(
        &self,
        route: &str,
        writes: &BTreeMap<String, Option<String>>,
    ) -> Result<(), StateError> {
        if writes.is_empty() {
            return Ok(());
        }
        self.ask(|r| Request::Apply(route.into(), writes.clone(), r))
    }

    fn dump(&self, route: &str) -> Result<BTreeMap<String, String>, StateError> {
        self.ask(|r| Request::Dump(route.into(), r))
    }
}

fn err(e: impl std::error::Error + Send + Sync + 'static) -> StateError {
    StateError::backend("postgres", e)
}

async fn serve(target: Target, shown: String, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut client: Option<Client> = None;
    let mut migrated = false;
    while let Some(req) = rx.recv().await {
        if client.as_ref().is_none_or(Client::is_closed) {
            client = None;
            match target.connect().await {
                Ok(mut c) => {
                    if !migrated {
                        // The table must exist (a store used before start).
                        match super::schema::migrate(&mut c, &shown, true).await {
                            Ok(_) => migrated = true,
                            Err(e) => {
                                fail(req, StateError::backend("postgres", e));
                                continue;
                            }
                        }
                    }
                    client = Some(c);
                }
                Err(e) => {
                    fail(req, err(e));
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else {
            continue;
        };
        match req {
            Request::Get(route, key, reply) => {
                let r = c
                    .query_opt(
                        "SELECT value FROM transform_state WHERE route = $1 AND key = $2",
                        &[&route, &key],
                    )
                    .await
                    .map_err(err)
                    .and_then(|row| row.map(|r| r.try_get(0).map_err(err)).transpose());
                let _ = reply.send(r);
            }
            Request::Apply(route, writes, reply) => {
                let _ = reply.send(apply(c, &route, &writes).await.map_err(err));
            }
            Request::Dump(route, reply) => {
                let r = c
                    .query(
                        "SELECT key, value FROM transform_state WHERE route = $1 ORDER BY key",
                        &[&route],
                    )
                    .await
                    .map_err(err)
                    .and_then(|rows| {
                        rows.iter()
                            .map(|r| Ok((r.try_get(0).map_err(err)?, r.try_get(1).map_err(err)?)))
                            .collect()
                    });
                let _ = reply.send(r);
            }
        }
    }
}

async fn apply(
    c: &mut Client,
    route: &str,
    writes: &BTreeMap<String, Option<String>>,
) -> Result<(), tokio_postgres::Error> {
    let tx = c.transaction().await?;
    for (key, value) in writes {
        match value {
            Some(v) => {
                tx.execute(
                    "INSERT INTO transform_state (route, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT (route, key) DO UPDATE
                        SET value = excluded.value, updated_at = clock_timestamp()",
                    &[&route, key, v],
                )
                .await?
            }
            None => {
                tx.execute(
                    "DELETE FROM transform_state WHERE route = $1 AND key = $2",
                    &[&route, key],
                )
                .await?
            }
        };
    }
    tx.commit().await
}

fn fail(req: Request, e: StateError) {
    match req {
        Request::Get(_, _, r) => {
            let _ = r.send(Err(e));
        }
        Request::Apply(_, _, r) => {
            let _ = r.send(Err(e));
        }
        Request::Dump(_, r) => {
            let _ = r.send(Err(e));
        }
    }
}
