//! `clickhouse`: inserts events into a ClickHouse table, one row per event with the columns
//! people filter on and the full event as JSON (`distribution/clickhouse/schema.sql`).
//!
//! It speaks ClickHouse's HTTP interface through the `clickhouse` crate, sending RowBinary by
//! default (`INSERT INTO db.table (columns) FORMAT RowBinary`, LZ4-framed): the server copies
//! binary values instead of parsing text and looking up every key, and the `event` column is
//! not JSON escaped inside JSON. `format = "json_each_row"` sends text the server converts, for
//! a table whose column types differ from the documented ones. Both formats work on ClickHouse
//! 18.16 (Debian's) and current releases. The crate's own schema validation
//! (`RowBinaryWithNamesAndTypes`) needs a server newer than 18.16, so it is not used; instead
//! `DESCRIBE TABLE` is checked when the sink starts (see [`schema::Layout::check`]). The rows
//! are encoded here, not by the crate's `Insert<T>`, because the `columns` option makes the set
//! of columns a matter of configuration, and because a retry or a bisected half must send the
//! very bytes of the first attempt.
//!
//! Delivery: a batch is acknowledged only once ClickHouse answered 200 for every row of it.
//! When the server is unreachable, slow or failing, the same rows are retried with capped
//! backoff for as long as it takes, holding the batch so that backpressure reaches the sources.
//! When it rejects the data itself, the insert is bisected until the bad rows are isolated;
//! they go to the dead-letter file and the rest is inserted. When the table itself does not fit
//! the rows (schema drift: a column the rows carry is missing), or every row of an insert of at
//! least [`TABLE_FAULT_MIN_ROWS`] fails for the same reason, no row is to blame: nothing is
//! dead-lettered, one error says what is wrong with the table, and the insert is retried with
//! backoff, holding backpressure, until the table is fixed. Delivery is at least once: an
//! insert that ClickHouse committed but whose answer was lost (a timeout, a server killed
//! mid-answer) is sent again, and a MergeTree table does not deduplicate it.
//!
//! The healthcheck (`SELECT 1`) runs when the sink starts; if ClickHouse cannot be reached the
//! sink fails at once with one clear error (exit 69) rather than buffering towards a server
//! that may be misconfigured. With `healthcheck = false` it starts anyway and retries.

mod batch;
mod insert;
mod schema;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use tapio_event::field::FieldPath;
use tapio_event::throttle::Throttle;
use tapio_event::{
    BatchStatus, BufferReceiver, BuildContext, ByteSize, ComponentConfig, ComponentError,
    ComponentFuture, ComponentMetrics, ConfigDuration, Secret, Sink, SinkContext,
};
use tokio::time::Instant;

use self::batch::{Chunk, Limits, NextInsert, Spares, new_spares, recycle};
use self::insert::{Body, Client, Failure, Rejection};
use self::schema::Layout;
use crate::util::dead_letter::DeadLetter;
use crate::util::retry::sink_backoff;

/// Options of the `clickhouse` sink.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClickhouseConfig {
    /// ClickHouse's HTTP interface; `http://` only (no TLS), and without credentials
    /// (`user:password@`, `?password=`): those go in `auth`, since the endpoint is shown in logs
    /// and errors.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// The database of the table, a plain name (letters, digits, `_`).
    #[serde(default = "default_database")]
    pub database: String,
    /// The table to insert into, a plain name (letters, digits, `_`); its columns are those of
    /// `distribution/clickhouse/schema.sql`.
    pub table: String,
    /// Credentials, sent as the `X-ClickHouse-User` and `X-ClickHouse-Key` headers. Unset:
    /// ClickHouse's `default` user.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// When to send an insert: as soon as any of its limits is reached.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Compression of request bodies: `"lz4"` (ClickHouse's own block framing, cheap enough for
    /// any link), `"gzip"` (`Content-Encoding: gzip`, smaller, for a slow link or a proxy that
    /// only passes standard encodings), `"none"`.
    #[serde(default)]
    pub compression: Compression,
    /// How rows travel: `"row_binary"` (binary values the server copies; needs the documented
    /// column types, checked at start) or `"json_each_row"` (text the server converts, for a
    /// table whose column types differ, e.g. `FixedString`). Both work on ClickHouse 18.16 and
    /// later.
    #[serde(default)]
    pub format: Format,
    /// Extra columns and the event field each holds, e.g.
    /// `columns = { comm = "process.comm", dst_port = "network.dst_port" }`: so that queries can
    /// filter on a field without parsing the `event` JSON. Each is a `String` column (numbers as
    /// their decimal text, absent fields as `""`) that the table must have; add it with
    /// `ALTER TABLE … ADD COLUMN comm String`. A typed copy is one more column away:
    /// `dst_port_n UInt16 MATERIALIZED toUInt16OrZero(dst_port)`.
    #[serde(default)]
    pub columns: BTreeMap<String, FieldPath>,
    /// Run the schema's `CREATE TABLE IF NOT EXISTS` for `database.table` when the sink starts;
    /// retried while the server is unreachable, and refused DDL stops the sink.
    #[serde(default)]
    pub create_table: bool,
    /// How long one request may take before it counts as failed and is retried.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: ConfigDuration,
    /// Inserts in flight at once. More can raise throughput; the rows of different inserts may
    /// then land out of order.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Send `SELECT 1` when the sink starts; if ClickHouse does not answer, the run stops with
    /// one error line naming the cause (exit 69). With `false` the sink starts anyway and
    /// retries until it answers.
    #[serde(default = "default_healthcheck")]
    pub healthcheck: bool,
}

/// ClickHouse credentials.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// The user name (`X-ClickHouse-User`).
    pub user: String,
    /// The password (`X-ClickHouse-Key`); write `"${ENV_VAR}"` to keep it out of the file. It
    /// shows as `***` wherever the config is printed.
    #[serde(default)]
    pub password: Secret,
}

/// The `batch` options: an insert is sent when any limit is reached.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Rows per insert. Keep it below ClickHouse's `max_insert_block_size`
    /// (1048576) so that each insert is all or nothing.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Uncompressed bytes per insert.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// The longest a row waits for its insert.
    #[serde(default = "default_batch_timeout")]
    pub timeout: ConfigDuration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: default_max_events(),
            max_bytes: default_max_bytes(),
            timeout: default_batch_timeout(),
        }
    }
}

/// How request bodies are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Sent as is.
    None,
    /// `Content-Encoding: gzip`, which ClickHouse 18.16 and later decode.
    Gzip,
    /// ClickHouse's LZ4 blocks (`decompress=1`), which 18.16 and later decode.
    #[default]
    Lz4,
}

/// The format rows are sent in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `RowBinary`: binary values, copied by the server into the documented column types.
    #[default]
    RowBinary,
    /// `JSONEachRow`: one JSON object a row, whose text the server converts to the columns'
    /// types.
    JsonEachRow,
}

fn default_endpoint() -> String {
    "http://127.0.0.1:8123".into()
}

fn default_database() -> String {
    "default".into()
}

fn default_request_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

fn default_concurrency() -> usize {
    1
}

fn default_healthcheck() -> bool {
    true
}

fn default_max_events() -> usize {
    10_000
}

fn default_max_bytes() -> ByteSize {
    ByteSize(10 << 20)
}

fn default_batch_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}

impl ComponentConfig for ClickhouseConfig {
    type Component = dyn Sink;

    fn uses_data_dir(&self) -> bool {
        true
    }

    /// Checks the options; the server itself is first contacted when the sink runs.
    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Sink>, ComponentError> {
        let invalid = |message: String| Err(ComponentError::config(message));
        if carries_credentials(&self.endpoint) {
            return invalid(
                "`endpoint` must not carry credentials (`user:password@` or a query such as \
                 `?password=`): it is shown in logs and errors; put them in `auth`"
                    .into(),
            );
        }
        for (option, name) in [("database", &self.database), ("table", &self.table)] {
            if !schema::is_identifier(name) {
                return invalid(format!(
                    "`{option}` must be a plain name (letters, digits, `_`), got {name:?}"
                ));
            }
        }
        for name in self.columns.keys() {
            if !schema::is_identifier(name)
                || schema::FIXED_COLUMNS.iter().any(|(fixed, _)| fixed == name)
            {
                return invalid(format!(
                    "`columns` key {name:?} must be a plain name (letters, digits, `_`) and not one of the table's own columns"
                ));
            }
        }
        match self.endpoint.parse::<hyper::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {}
            _ => {
                return invalid(format!(
                    "`endpoint` must be an http:// URL such as \"http://127.0.0.1:8123\", got {:?}",
                    self.endpoint
                ));
            }
        }
        if self.concurrency == 0 || self.batch.max_events == 0 || self.batch.max_bytes.0 == 0 {
            return invalid(
                "`concurrency`, `batch.max_events` and `batch.max_bytes` must be at least 1".into(),
            );
        }
        Ok(Box::new(ClickhouseSink {
            config: self.clone(),
            dead_letter: DeadLetter::new(&cx.data_dir, &cx.name),
        }))
    }
}

/// Whether `endpoint` holds what could be credentials: user info before the host (which the
/// client does not turn into a login) or a query (ClickHouse reads `?user=&password=`). Checked
/// before anything else, so that no error or log line that shows the endpoint shows a password.
fn carries_credentials(endpoint: &str) -> bool {
    let after_scheme = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    authority.contains('@') || endpoint.contains('?')
}

struct ClickhouseSink {
    config: ClickhouseConfig,
    dead_letter: DeadLetter,
}

/// What every insert task shares.
struct InsertContext {
    client: Client,
    /// `` `database`.`table` ``.
    target: String,
    /// How rows are written.
    layout: Layout,
    /// The `INSERT` statement for the layout.
    insert_sql: String,
    dead_letter: DeadLetter,
    metrics: Arc<ComponentMetrics>,
    /// Failed requests since the last warning, so a server down for an hour does not flood
    /// the log.
    warnings: Mutex<Throttle>,
    /// Insert bodies handed back once written, for the next inserts.
    spares: Spares,
}

/// How often a failing server is reported at most; every failure is still counted.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

impl ClickhouseConfig {
    /// A client for the configured server and user.
    fn client(&self) -> Client {
        Client::new(
            &self.endpoint,
            self.auth.clone(),
            self.compression,
            self.request_timeout.0,
        )
    }
}

impl Sink for ClickhouseSink {
    /// `SELECT 1`, so that a server that is down or a wrong `endpoint`/`auth` fails the start
    /// with one clear line rather than buffering towards a server that may be misconfigured.
    fn healthcheck(&self) -> BoxFuture<'static, Result<(), ComponentError>> {
        if !self.config.healthcheck {
            return Box::pin(std::future::ready(Ok(())));
        }
        let client = self.config.client();
        Box::pin(async move {
            client.execute("SELECT 1").await.map(drop).map_err(|failure| {
                ComponentError::unavailable(format!(
                    "clickhouse healthcheck (SELECT 1) failed: {}; start ClickHouse, fix `endpoint`/`auth`, or set `healthcheck = false` to start anyway and retry",
                    failure.message()
                ))
            })
        })
    }

    fn run(self: Box<Self>, mut input: BufferReceiver, cx: SinkContext) -> ComponentFuture {
        Box::pin(async move {
            let config = self.config;
            let target = format!("`{}`.`{}`", config.database, config.table);
            let layout = Layout {
                format: config.format,
                extras: config.columns.clone().into_iter().collect(),
            };
            let shared = Arc::new(InsertContext {
                client: config.client(),
                insert_sql: layout.insert_sql(&target),
                layout: layout.clone(),
                target,
                dead_letter: self.dead_letter,
                metrics: cx.metrics,
                warnings: Mutex::new(Throttle::new(WARN_INTERVAL)),
                spares: new_spares(),
            });
            if config.create_table {
                let sql = schema::create_table_sql(&config.database, &config.table);
                shared
                    .retry("create_table", || shared.client.execute(&sql))
                    .await
                    .map_err(|failure| {
                        ComponentError::unavailable(format!(
                            "cannot create table {}: {}",
                            shared.target,
                            failure.message()
                        ))
                    })?;
            }
            shared.check_table().await?;
            let limits = Limits {
                max_events: config.batch.max_events,
                max_bytes: usize::try_from(config.batch.max_bytes.0).unwrap_or(usize::MAX),
                timeout: config.batch.timeout.0,
            };
            let mut pending = NextInsert::new(limits, layout, shared.spares.clone());
            let mut in_flight = FuturesUnordered::new();
            let concurrency = config.concurrency;
            loop {
                let deadline = pending.deadline();
                tokio::select! {
                    Some(done) = in_flight.next() => done?,
                    // Rows for the next insert are gathered while earlier ones are in flight;
                    // a full insert waits for a free slot below.
                    batch = input.recv() => {
                        let Some(batch) = batch else { break };
                        let (events, acks) = batch.into_parts();
                        for chunk in pending.add(&events, acks) {
                            // Its compression starts now, while it waits for a slot.
                            let delivery = Arc::clone(&shared).deliver(chunk);
                            if in_flight.len() >= concurrency
                                && let Some(done) = in_flight.next().await
                            {
                                done?;
                            }
                            in_flight.push(delivery);
                        }
                    }
                    () = sleep_until(deadline), if in_flight.len() < concurrency => {
                        in_flight.push(Arc::clone(&shared).deliver(pending.take()));
                    }
                }
            }
            if !pending.is_empty() {
                in_flight.push(Arc::clone(&shared).deliver(pending.take()));
            }
            while let Some(done) = in_flight.next().await {
                done?;
            }
            Ok(())
        })
    }
}

/// Given that ClickHouse rejected rows `0..rows` for `reason`, inserts their parts with
/// `insert`, which answers `None` when a range was written and the reason when ClickHouse
/// rejected its data; a rejected range is split in halves, sent separately, until each bad row
/// stands alone. Returns the rejected rows' indices with their reasons, in order. A bad row
/// costs about two inserts per halving, so `2 log2(rows)` extra inserts for one bad row.
async fn bisect<R, F, Fut>(
    rows: usize,
    reason: R,
    mut insert: F,
) -> Result<Vec<(usize, R)>, ComponentError>
where
    F: FnMut(Range<usize>) -> Fut,
    Fut: std::future::Future<Output = Result<Option<R>, ComponentError>>,
{
    let mut rejected = Vec::new();
    let mut parts = vec![(0..rows, Some(reason))];
    while let Some((part, known)) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        let outcome = match known {
            Some(reason) => Some(reason),
            None => insert(part.clone()).await?,
        };
        let Some(reason) = outcome else {
            continue;
        };
        if part.len() == 1 {
            rejected.push((part.start, reason));
        } else {
            let middle = part.start + part.len() / 2;
            parts.push((middle..part.end, None));
            parts.push((part.start..middle, None));
        }
    }
    Ok(rejected)
}

/// Inserts with fewer rows than this that fail row by row for one reason are taken for bad
/// rows, not a table at fault: a few events can share a flaw (a replay of events from before
/// 1970, which `DateTime` cannot hold), while a thousand events all failing alike say that the
/// table does not fit what Tapio writes. Well below the default `batch.max_events` (10000), so
/// a full insert qualifies, and above the handful of rows a quiet stream sends per insert.
const TABLE_FAULT_MIN_ROWS: usize = 1000;

/// The reason shared by every row of an insert of `rows` rows when all of them were `rejected`
/// alike and there are at least [`TABLE_FAULT_MIN_ROWS`] of them.
fn shared_reason(rejected: &[(usize, Rejection)], rows: usize) -> Option<&Rejection> {
    let (_, first) = rejected.first()?;
    let alike = rejected.iter().all(|(_, r)| r.same_reason(first));
    (rows >= TABLE_FAULT_MIN_ROWS && rejected.len() == rows && alike).then_some(first)
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl InsertContext {
    /// Checks the table's columns (`DESCRIBE TABLE`) against the rows before the first insert:
    /// a table that does not fit is a table at fault, logged once and checked again with
    /// backoff until someone fixes it; an unknown table stops the sink.
    async fn check_table(&self) -> Result<(), ComponentError> {
        let describe = format!("DESCRIBE TABLE {}", self.target);
        self.retry("describe", || async {
            let columns = self.client.fetch_text(&describe).await?;
            self.layout
                .check(&columns)
                .map_err(|problem| Failure::Table(format!("table {}: {problem}", self.target)))
        })
        .await
        .map_err(|failure| self.error(&failure))
    }

    /// Inserts every row of `chunk` or dead-letters the ones ClickHouse rejects, then
    /// acknowledges the chunk's batches. The whole chunk's body is compressed from the moment
    /// this is called; the returned future does the rest when it is polled.
    fn deliver(
        self: Arc<Self>,
        chunk: Chunk,
    ) -> impl Future<Output = Result<(), ComponentError>> + Send + 'static {
        let whole = self.client.prepare(chunk.body.clone());
        self.deliver_prepared(chunk, whole)
    }

    async fn deliver_prepared(
        self: Arc<Self>,
        chunk: Chunk,
        whole: impl Future<Output = Result<Body, Failure>> + Send,
    ) -> Result<(), ComponentError> {
        let whole = whole.await.map_err(|failure| self.error(&failure))?;
        let rejected = if chunk.len() == 0 {
            Vec::new()
        } else {
            self.insert_rows(&chunk, &whole).await?
        };
        for (row, reason) in &rejected {
            let line = chunk.lines(*row..*row + 1);
            self.dead_letter
                .write(&reason.message, &self.layout.event_of(&line))
                .await?;
        }
        if let Some((_, reason)) = rejected.first() {
            self.metrics.add_errors("rejected", rejected.len());
            tracing::warn!(
                sink = %self.metrics.name,
                events = rejected.len(),
                file = %self.dead_letter.path().display(),
                reason = %reason.message,
                "ClickHouse rejected events; written to the dead-letter file"
            );
        }
        for ack in chunk.acks {
            ack.ack(BatchStatus::Delivered);
        }
        recycle(&self.spares, chunk.body);
        Ok(())
    }

    /// Inserts every row of `chunk` (prepared as `whole`) but those ClickHouse rejects, which
    /// it returns. While every row fails alike (see [`shared_reason`]) the table is at fault:
    /// that is logged once, and the whole insert is retried with backoff, bisected again only
    /// if it fails for another reason.
    async fn insert_rows(
        &self,
        chunk: &Chunk,
        whole: &Body,
    ) -> Result<Vec<(usize, Rejection)>, ComponentError> {
        let mut backoff = sink_backoff();
        let mut table_fault: Option<Rejection> = None;
        loop {
            let Some(rejection) = self.insert(whole).await? else {
                self.metrics.add_events_out(chunk.len());
                self.metrics.add_bytes_out(chunk.body.len());
                return Ok(Vec::new());
            };
            let repeated = table_fault
                .as_ref()
                .is_some_and(|fault| fault.same_reason(&rejection));
            if !repeated {
                let rejected = self.bisect_rows(chunk, rejection).await?;
                let Some(reason) = shared_reason(&rejected, chunk.len()) else {
                    return Ok(rejected);
                };
                tracing::error!(
                    sink = %self.metrics.name,
                    table = %self.target,
                    rows = chunk.len(),
                    reason = %reason.message,
                    "every row of an insert failed for the same reason, so the table, not the rows, is at fault: fix the table; retrying, nothing is dead-lettered"
                );
                table_fault = Some(reason.clone());
            }
            self.metrics.add_errors("insert", 1);
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Finds the rows of `chunk` that ClickHouse rejects, given that it rejected them all
    /// together for `reason`, inserting the others; each part is compressed on demand.
    async fn bisect_rows(
        &self,
        chunk: &Chunk,
        reason: Rejection,
    ) -> Result<Vec<(usize, Rejection)>, ComponentError> {
        bisect(chunk.len(), reason, |rows| {
            let count = rows.len();
            let lines = chunk.lines(rows);
            let bytes = lines.len();
            async move {
                let body = self
                    .client
                    .prepare(lines)
                    .await
                    .map_err(|failure| self.error(&failure))?;
                let outcome = self.insert(&body).await?;
                if outcome.is_none() {
                    self.metrics.add_events_out(count);
                    self.metrics.add_bytes_out(bytes);
                }
                Ok(outcome)
            }
        })
        .await
    }

    /// The sink's error for a request that can never succeed.
    /// Counts a failed request; returns how many failed since the last warning when one is due.
    fn count_failure(&self) -> Option<usize> {
        let mut warnings = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        warnings.add(1)
    }

    fn error(&self, failure: &Failure) -> ComponentError {
        ComponentError::runtime(format!(
            "clickhouse insert into {}: {}",
            self.target,
            failure.message()
        ))
    }

    /// Sends one insert, retrying until ClickHouse accepts it (`None`) or rejects its data
    /// (`Some(reason)`); a request that can never succeed stops the sink.
    async fn insert(&self, body: &Body) -> Result<Option<Rejection>, ComponentError> {
        match self
            .retry("insert", || self.client.insert(&self.insert_sql, body))
            .await
        {
            Ok(()) => Ok(None),
            Err(Failure::Rejected(reason)) => Ok(Some(reason)),
            Err(failure) => Err(self.error(&failure)),
        }
    }

    /// Runs `request` until it succeeds or fails with anything but a retryable failure or a
    /// table at fault, counting each failed attempt as an error of `kind` and backing off
    /// between them. A table at fault is logged as an error the first time, since only a
    /// person can fix it; later attempts are reported like any failing request.
    async fn retry<T, F, Fut>(&self, kind: &'static str, mut request: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut backoff = sink_backoff();
        let mut table_reported = false;
        loop {
            let (error, table) = match request().await {
                Err(Failure::Retryable(error)) => (error, false),
                Err(Failure::Table(error)) => (error, true),
                other => return other,
            };
            let delay = backoff.next_delay();
            self.metrics.add_errors(kind, 1);
            if table && !table_reported {
                table_reported = true;
                tracing::error!(sink = %self.metrics.name, table = %self.target, %error, retry_in = ?delay, "the ClickHouse table does not fit the events (a column is missing): fix the table; retrying, nothing is dead-lettered");
            } else if let Some(failures) = self.count_failure() {
                tracing::warn!(sink = %self.metrics.name, %error, failures, retry_in = ?delay, "ClickHouse request failed; retrying");
            }
            tokio::time::sleep(delay).await;
        }
    }
}
