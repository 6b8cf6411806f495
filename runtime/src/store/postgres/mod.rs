//! The shared backend: PostgreSQL, for several nodes on one database
//! (docs/notes/postgres.md has the design and the measurements behind it).
//!
//! * Client: tokio-postgres with a deadpool-postgres pool (no proc macros,
//!   no database at build time; LISTEN needs a connection of our own);
//!   TLS with rustls, `sslmode` parsed by us ([`tls`]).
//! * [`schema`]: embedded migrations applied under an advisory lock; a
//!   newer schema is refused.
//! * [`admit`]: webhooks arriving while a commit is under way are admitted
//!   together, one transaction and one commit for the group; one `alerts`
//!   row per alert orders them and settles the dedupe race across nodes.
//! * [`claims`]: `FOR UPDATE SKIP LOCKED` claims of the heads of (route,
//!   alert), leased to this node, renewed by heartbeat, taken over by any
//!   node once expired, given back on stop; finishes committed in groups.
//! * [`rate`]: the GCRA rate limit per rate key in a row (`rate_take()`),
//!   taken in the claim transaction, so it holds for the cluster.
//! * [`session`]: this node's own connection: the node-name lock (one live
//!   process per name), LISTEN for other nodes' admits, reconnection.
//! * [`views`] for the API and the CLI; [`state`] the transforms' state.

mod admit;
mod claims;
mod rate;
mod schema;
mod session;
mod state;
pub mod tls;
mod views;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{Notify, OnceCell};

use crate::store::{
    Admission, AttemptPoint, AttemptRecord, Backlog, ClaimBatch, ClaimScope, ClusterView,
    DeliveryKey, EventRecord, ListFilter, ListRow, NewEvent, Next, RateLimit, RetrySelection,
    RouteCount, Store, StoreError, TransformState,
};
pub use schema::SchemaStatus;
pub use tls::{Target, UrlError};

/// One event as another store kept it, for `store copy`.
pub struct Imported<'a> {
    /// Its deliveries and attempts (and receipt, times, severity, state).
    pub record: &'a EventRecord,
    /// Superna's event ID as received (the record's is for display).
    pub event_id: Option<&'a str>,
    /// What ordered it (the event ID, or the receipt without one).
    pub order_key: &'a str,
    /// SHA-256 of the body.
    pub body_hash: &'a str,
    /// The body as received.
    pub body: &'a str,
    /// The kept headers, as a JSON object's text.
    pub headers: &'a str,
}

/// How to reach the database and who this node is.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/db?sslmode=...`.
    pub url: String,
    /// The password, when it is kept out of the URL.
    pub password: Option<String>,
    /// This node's name: unique among live nodes, the same across its
    /// restarts (a restarted node takes its own claims back at once).
    pub node: String,
    /// How long a claim lasts without a heartbeat (renewed every third).
    pub lease: Duration,
    /// Pooled connections (besides the session and the state connection).
    pub pool_size: usize,
    /// Apply migrations at start (`false`: only check the version).
    pub migrate: bool,
}

/// The PostgreSQL store.  Needs a tokio runtime when made (it starts its
/// group-commit tasks on it).
pub struct PgStore {
    /// Where it is, without the password.
    shown: String,
    /// The parsed URL and TLS connector (the session and state connections).
    target: Target,
    /// Pooled connections for everything else.
    pool: Pool,
    /// This node's name, lease length, migration policy.
    options: PgOptions,
    /// Set once the schema is checked (or migrated) in this process.
    schema: OnceCell<()>,
    /// Admits grouped into commits.
    admits: admit::Admitter,
    /// Finishes grouped into commits.
    finishes: claims::Finisher,
    /// The routes' rate limits (configuration; the state is in the store).
    rates: rate::Limits,
    /// Transform state (a connection on a thread of its own: the interface
    /// is synchronous).
    state: Arc<state::PgState>,
    /// Woken when another node admitted something (NOTIFY), when claims
    /// were taken over, and when the session came back.
    wake: Arc<Notify>,
    /// Rung after an admit committed: one NOTIFY for the other nodes.
    notifier: Arc<Notify>,
    /// Background tasks (session, heartbeat, notifier), stopped on drop.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::Backend {
            backend: "postgres",
            context: "statement failed".into(),
            source: Box::new(e),
        }
    }
}

/// Maps a database error to a [`StoreError`] saying what was being done.
pub(crate) fn pg_error(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::Backend {
        backend: "postgres",
        context: context.into(),
        source: Box::new(e),
    }
}

/// A pool that could not give a connection.
pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Backend {
        backend: "postgres",
        context: "no connection to PostgreSQL".into(),
        source: Box::new(e),
    }
}

impl PgStore {
    /// Makes the store; nothing is connected yet (the first call connects
    /// and checks the schema).  Needs a tokio runtime.
    pub fn new(options: PgOptions) -> Result<PgStore, StoreError> {
        let target = Target::parse(&options.url, options.password.as_deref()).map_err(|e| {
            StoreError::Backend {
                backend: "postgres",
                context: "[store] url".into(),
                source: Box::new(e),
            }
        })?;
        tokio::runtime::Handle::try_current().map_err(|e| StoreError::Backend {
            backend: "postgres",
            context: "the store needs a tokio runtime".into(),
            source: Box::new(e),
        })?;
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = Some(Duration::from_secs(5));
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .build()
            .map_err(|e| StoreError::Backend {
                backend: "postgres",
                context: "connection pool".into(),
                source: Box::new(e),
            })?;
        let node: Arc<str> = options.node.clone().into();
        let notifier = Arc::new(Notify::new());
        let state = Arc::new(state::PgState::start(target.clone(), target.shown.clone())?);
        Ok(PgStore {
            shown: target.shown.clone(),
            admits: admit::Admitter::start(pool.clone(), node.clone(), notifier.clone()),
            finishes: claims::Finisher::start(pool.clone(), node),
            rates: rate::Limits::default(),
            state,
            wake: Arc::new(Notify::new()),
            tasks: std::sync::Mutex::new(vec![tokio::spawn(session::notifier(
                pool.clone(),
                notifier.clone(),
            ))]),
            notifier,
            schema: OnceCell::new(),
            target,
            pool,
            options,
        })
    }

    /// Connects, and applies (or checks) the schema once per process.
    async fn ready(&self) -> Result<(), StoreError> {
        self.schema
            .get_or_try_init(|| async {
                let mut client = self.target.connect().await.map_err(pg_error(
                    "cannot connect to PostgreSQL (is it running, and the [store] url right?)",
                ))?;
                schema::migrate(&mut client, &self.shown, self.options.migrate).await?;
                Ok::<(), StoreError>(())
            })
            .await
            .map(|_| ())
    }

    /// A pooled connection, once the schema is right.
    async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.ready().await?;
        self.pool.get().await.map_err(pool_error)
    }

    /// Applies the migrations (`ztbridge store migrate`), or with
    /// `apply = false` only checks that the schema is the binary's.
    pub async fn migrate(&self, apply: bool) -> Result<SchemaStatus, StoreError> {
        let mut client = self.target.connect().await.map_err(pg_error(
            "cannot connect to PostgreSQL (is it running, and the [store] url right?)",
        ))?;
        schema::migrate(&mut client, &self.shown, apply).await
    }

    /// The newest schema version this binary knows.
    pub fn schema_version() -> i32 {
        schema::latest()
    }

    /// Whether the store holds no event and no transform state (`store
    /// copy` refuses a non-empty target).
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let c = self.conn().await?;
        let row = c
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM events) AND NOT EXISTS (SELECT 1 FROM transform_state)",
                &[],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Copies one event with its deliveries and attempts as they are (the
    /// `store copy` command); an event whose receipt ID is already there
    /// is skipped.  Returns whether it was copied.
    pub async fn import(&self, event: &Imported<'_>) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        views::import(&mut c, &self.options.node, event).await
    }

    /// Copies one transform-state entry unless the key is there already.
    /// Returns whether it was copied.
    pub async fn import_state(
        &self,
        route: &str,
        key: &str,
        value: &str,
    ) -> Result<bool, StoreError> {
        let c = self.conn().await?;
        let n = c
            .execute(
                "INSERT INTO transform_state (route, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (route, key) DO NOTHING",
                &[&route, &key, &value],
            )
            .await
            .map_err(pg_error("import transform state"))?;
        Ok(n == 1)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    async fn admit(&self, event: NewEvent, dedupe_window_ms: i64) -> Result<Admission, StoreError> {
        self.ready().await?;
        self.admits.admit(event, dedupe_window_ms).await
    }

    async fn start(&self) -> Result<usize, StoreError> {
        self.ready().await?;
        let (session, recovered) = session::Session::start(
            self.target.clone(),
            self.pool.clone(),
            self.options.clone(),
            self.wake.clone(),
        )
        .await?;
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.push(session);
        tasks.push(tokio::spawn(claims::heartbeat(
            self.pool.clone(),
            self.options.node.clone(),
            self.options.lease,
            self.wake.clone(),
        )));
        Ok(recovered)
    }

    fn set_rate_limits(&self, limits: Vec<(String, RateLimit)>) {
        self.rates.set(limits);
    }

    async fn claim_within(
        &self,
        now_ms: i64,
        max: usize,
        scope: &ClaimScope,
    ) -> Result<ClaimBatch, StoreError> {
        let mut c = self.conn().await?;
        claims::claim(
            &mut c,
            &self.options.node,
            self.options.lease,
            &self.rates,
            now_ms,
            max,
            scope,
        )
        .await
    }

    async fn release(&self, keys: Vec<DeliveryKey>) -> Result<(), StoreError> {
        let c = self.conn().await?;
        claims::release(&c, &self.options.node, &keys).await
    }

    async fn hold(&self, key: DeliveryKey, reason: String) -> Result<(), StoreError> {
        let c = self.conn().await?;
        claims::hold(&c, &self.options.node, &key, &reason).await
    }

    async fn finish(
        &self,
        key: DeliveryKey,
        attempt: AttemptRecord,
        next: Next,
    ) -> Result<(), StoreError> {
        self.ready().await?;
        self.finishes.finish(key, attempt, next).await
    }

    async fn next_retry_ms(&self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        let c = self.conn().await?;
        views::next_retry_ms(&c, now_ms).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let c = self.conn().await?;
        c.execute(
            "UPDATE nodes SET heartbeat_at = clock_timestamp() WHERE node_id = $1",
            &[&self.options.node],
        )
        .await
        .map_err(pg_error("health check write"))?;
        Ok(())
    }

    async fn backlog(&self) -> Result<Backlog, StoreError> {
        let c = self.conn().await?;
        views::backlog(&c).await
    }

    async fn open_by_route(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let c = self.conn().await?;
        views::open_by_route(&c).await
    }

    async fn record(
        &self,
        receipt_id: &str,
        with_body: bool,
    ) -> Result<Option<EventRecord>, StoreError> {
        let c = self.conn().await?;
        views::record(&c, receipt_id, with_body).await
    }

    async fn receipts_for_event_id(&self, event_id: &str) -> Result<Vec<String>, StoreError> {
        let c = self.conn().await?;
        views::receipts_for_event_id(&c, event_id).await
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<ListRow>, StoreError> {
        let c = self.conn().await?;
        views::list(&c, &filter).await
    }

    async fn count(&self, filter: ListFilter) -> Result<u64, StoreError> {
        let c = self.conn().await?;
        views::count(&c, &filter).await
    }

    async fn route_counts(&self) -> Result<Vec<RouteCount>, StoreError> {
        let c = self.conn().await?;
        views::route_counts(&c).await
    }

    async fn attempts_since(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<AttemptPoint>, StoreError> {
        let c = self.conn().await?;
        views::attempts_since(&c, since_ms, limit).await
    }

    async fn requeue(
        &self,
        receipt_id: &str,
        route: Option<&str>,
        horizon_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let c = self.conn().await?;
        let requeued = claims::requeue(&c, receipt_id, route, horizon_ms).await?;
        if !requeued.is_empty() {
            self.notifier.notify_one();
        }
        Ok(requeued)
    }

    async fn skip(&self, receipt_id: &str, route: &str, reason: &str) -> Result<bool, StoreError> {
        let c = self.conn().await?;
        claims::skip(&c, receipt_id, route, reason).await
    }

    async fn set_paused(&self, route: &str, paused: bool) -> Result<(), StoreError> {
        let c = self.conn().await?;
        claims::set_paused(&c, route, paused).await?;
        if !paused {
            self.notifier.notify_one();
        }
        Ok(())
    }

    async fn paused_routes(&self) -> Result<Vec<String>, StoreError> {
        let c = self.conn().await?;
        views::paused_routes(&c).await
    }

    async fn retry_failed(
        &self,
        selection: RetrySelection,
        horizon_ms: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let c = self.conn().await?;
        let retried = claims::retry_failed(&c, &selection, horizon_ms).await?;
        if !retried.is_empty() {
            self.notifier.notify_one();
        }
        Ok(retried)
    }

    async fn purge_delivered_before(&self, before_ms: i64) -> Result<usize, StoreError> {
        let c = self.conn().await?;
        claims::purge(&c, before_ms).await
    }

    fn transform_state(&self) -> Arc<dyn TransformState> {
        self.state.clone()
    }

    async fn stop(&self) -> Result<(), StoreError> {
        let c = self.conn().await?;
        let released = claims::stop(&c, &self.options.node).await?;
        if released > 0 {
            tracing::info!(released, "claims given back to the other nodes");
        }
        Ok(())
    }

    fn wakeups(&self) -> Option<Arc<Notify>> {
        Some(self.wake.clone())
    }

    async fn cluster(&self) -> Result<Option<ClusterView>, StoreError> {
        let c = self.conn().await?;
        views::cluster(&c, self.options.lease).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_schema_is_version_1_or_later() {
        assert!(super::schema::latest() >= 1);
    }
}
