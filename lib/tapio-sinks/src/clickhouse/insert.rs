//! ClickHouse's HTTP interface through the `clickhouse` crate (ClickHouse's own client): its
//! connection pool, auth headers and LZ4 framing (`decompress=1`). Statements (`SELECT 1`,
//! `DESCRIBE TABLE`, `CREATE TABLE`) go through a client that asks for no compressed answer,
//! since 18.16's LZ4-compressed answers do not decode in the crate; inserts carry bodies this
//! sink encoded and kept (RowBinary or JSONEachRow), so that a retry or a bisected part sends
//! exactly the same rows. Gzip, which the crate does not do, is `Content-Encoding: gzip` on a
//! body compressed here.

use std::time::Duration;

use bytes::Bytes;
use clickhouse::error::Error as ChError;
use hyper::StatusCode;

use super::{Auth, Compression};
use crate::util::gzip::gzip;

/// Why a request did not succeed, sorted by what the sink does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// The server is unreachable, slow or failing (connection refused/reset, timeout, 5xx):
    /// the same rows are sent again after a backoff.
    Retryable(String),
    /// The table does not fit the rows (it lacks a column they carry): no row is to blame, so
    /// none is dead-lettered; like [`Failure::Retryable`], the same rows are sent again after a
    /// backoff, until someone fixes the table.
    Table(String),
    /// The server refused the data itself (a value that does not parse or fit its column):
    /// the rows are bisected to find the bad ones, which go to the dead-letter file.
    Rejected(Rejection),
    /// The request can never succeed as configured (unknown table or database, bad
    /// credentials, no permission): the sink stops with this message.
    Fatal(String),
}

impl Failure {
    /// The server's or the transport's message.
    pub fn message(&self) -> &str {
        match self {
            Failure::Retryable(m) | Failure::Table(m) | Failure::Fatal(m) => m,
            Failure::Rejected(rejection) => &rejection.message,
        }
    }
}

/// Why ClickHouse refused the data of an insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rejection {
    /// Its exception code, when the answer had one.
    pub code: Option<u32>,
    /// The answer, for the dead-letter file and the log.
    pub message: String,
}

impl Rejection {
    /// Whether `other` is the same kind of refusal: the same exception code (the messages
    /// differ by row number and value), or the same message when there is no code.
    pub fn same_reason(&self, other: &Rejection) -> bool {
        match (self.code, other.code) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => self.message == other.message,
        }
    }
}

/// ClickHouse exception codes for data that does not fit the table: cannot parse text, a
/// number, a date or time; an assertion while parsing; incorrect data; a value too large for
/// its type; a type mismatch or a failed conversion; a value out of bounds. 18.16 answers these
/// with HTTP 500, current releases mostly with 400, so the code decides.
const ROW_ERROR_CODES: &[u32] = &[6, 26, 27, 32, 38, 41, 53, 69, 70, 72, INCORRECT_DATA, 131];

/// ClickHouse exception codes about the table's columns rather than a row's values: no such
/// column (`THERE_IS_NO_COLUMN`, `NOT_FOUND_COLUMN_IN_BLOCK`, `NO_SUCH_COLUMN_IN_TABLE`), an
/// unknown identifier.
const TABLE_ERROR_CODES: &[u32] = &[8, 10, 16, 47];

/// `INCORRECT_DATA`: a row error, except when it says the row has a field the table has no
/// column for (`Unknown field found while parsing JSONEachRow format: …`), which every row of
/// ours then has.
const INCORRECT_DATA: u32 = 117;

/// ClickHouse exception codes no retry can fix: unknown table or database, unknown user, wrong
/// or missing password, read-only user, access denied, authentication failed.
const FATAL_CODES: &[u32] = &[60, 81, 192, 193, 194, 164, 497, 516];

/// Clients bound to one ClickHouse endpoint and user.
#[derive(Clone)]
pub(super) struct Client {
    /// For statements: answers uncompressed.
    statements: clickhouse::Client,
    /// For inserts: LZ4 framing when configured, or a gzip `Content-Encoding` header.
    inserts: clickhouse::Client,
    endpoint: String,
    compression: Compression,
    timeout: Duration,
}

/// An insert's request body, gzip-compressed or not; cheap to send again (LZ4 framing is
/// applied by the crate as it sends).
pub(super) struct Body {
    bytes: Bytes,
}

impl Client {
    /// A client for `endpoint` (`http://host:port`, already validated).
    pub fn new(
        endpoint: &str,
        auth: Option<Auth>,
        compression: Compression,
        timeout: Duration,
    ) -> Client {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let mut base = clickhouse::Client::default().with_url(&endpoint);
        if let Some(auth) = &auth {
            base = base
                .with_user(&auth.user)
                .with_password(auth.password.expose());
        }
        let statements = base.clone().with_compression(clickhouse::Compression::None);
        let inserts = match compression {
            Compression::Lz4 => base.with_compression(clickhouse::Compression::Lz4),
            Compression::Gzip => base
                .with_compression(clickhouse::Compression::None)
                .with_header("Content-Encoding", "gzip"),
            Compression::None => base.with_compression(clickhouse::Compression::None),
        };
        Client {
            statements,
            inserts,
            endpoint,
            compression,
            timeout,
        }
    }

    /// Runs a statement that carries no data (`SELECT 1`, `CREATE TABLE`).
    pub async fn execute(&self, statement: &str) -> Result<(), Failure> {
        let query = self.statements.query_raw(statement);
        self.within_timeout(query.execute()).await
    }

    /// Runs a query and returns its answer in `TabSeparated` form (`DESCRIBE TABLE`).
    pub async fn fetch_text(&self, statement: &str) -> Result<String, Failure> {
        let query = self.statements.query_raw(statement);
        self.within_timeout(async move {
            let mut cursor = query.fetch_bytes("TabSeparated")?;
            let bytes = cursor.collect().await?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        })
        .await
    }

    /// Compresses `rows` with gzip when configured, once for every attempt to send them.
    /// Compression starts at once, on a blocking thread, when this is called (not when the
    /// answer is awaited): gzip of a 10 MB insert takes tens of milliseconds, which then
    /// overlaps with the insert before it and stays off the sink's task. The blocking thread
    /// never runs when the runtime shuts down first: that is a [`Failure::Fatal`].
    pub fn prepare(
        &self,
        rows: Bytes,
    ) -> impl Future<Output = Result<Body, Failure>> + Send + use<> {
        let job = match self.compression {
            Compression::None | Compression::Lz4 => Ok(rows),
            Compression::Gzip => Err(tokio::task::spawn_blocking(move || gzip(&rows))),
        };
        async move {
            Ok(match job {
                Ok(rows) => Body { bytes: rows },
                Err(compressing) => Body {
                    bytes: Bytes::from(compressing.await.map_err(|e| {
                        Failure::Fatal(format!("compressing an insert did not finish: {e}"))
                    })?),
                },
            })
        }
    }

    /// Sends a prepared body with `insert` (`INSERT INTO … FORMAT …`).
    pub async fn insert(&self, insert: &str, body: &Body) -> Result<(), Failure> {
        let mut request = self.inserts.insert_formatted_with(insert);
        let bytes = body.bytes.clone();
        self.within_timeout(async move {
            request.send(bytes).await?;
            request.end().await
        })
        .await
    }

    /// Runs `request` for at most the configured timeout, sorting its failure.
    async fn within_timeout<T>(
        &self,
        request: impl Future<Output = Result<T, ChError>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(failure_of(&self.endpoint, &error)),
            Err(_) => Err(Failure::Retryable(format!(
                "{}: no answer within {:?}",
                self.endpoint, self.timeout
            ))),
        }
    }
}

/// Sorts an error of the crate: transport failures are retried, an answer of the server is
/// classified by its exception code (or by the status the crate reports when the answer was
/// empty), anything else (a request that cannot be built or compressed) can never succeed.
fn failure_of(endpoint: &str, error: &ChError) -> Failure {
    match error {
        ChError::Network(_) | ChError::TimedOut | ChError::Decompression(_) => {
            Failure::Retryable(transport_error(endpoint, error))
        }
        ChError::BadResponse(body) => {
            let status = body
                .split_whitespace()
                .next()
                .filter(|word| word.len() == 3)
                .and_then(|word| word.parse::<u16>().ok())
                .and_then(|code| StatusCode::from_u16(code).ok());
            classify(status, exception_code(body), body.trim())
        }
        other => Failure::Fatal(transport_error(endpoint, other)),
    }
}

/// An error with its causes, which name what actually failed (refused, reset, …).
fn transport_error(endpoint: &str, error: &dyn std::error::Error) -> String {
    let mut message = format!("{endpoint}: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

/// Sorts an error answer into what the sink does next (see [`Failure`]).
/// `status` is known only when the server's answer had no body.
pub(super) fn classify(status: Option<StatusCode>, code: Option<u32>, body: &str) -> Failure {
    let message = format!("ClickHouse answered: {body}");
    let code_in = |codes: &[u32]| code.is_some_and(|c| codes.contains(&c));
    if code_in(FATAL_CODES)
        || matches!(
            status,
            Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND)
        )
    {
        Failure::Fatal(message)
    } else if code_in(TABLE_ERROR_CODES)
        || (code == Some(INCORRECT_DATA) && body.contains("Unknown field"))
    {
        Failure::Table(message)
    } else if code_in(ROW_ERROR_CODES) || status.is_some_and(|s| s.is_client_error()) {
        Failure::Rejected(Rejection { code, message })
    } else {
        Failure::Retryable(message)
    }
}

/// The exception code at the start of an error body: `Code: 27, e.displayText() = …` (18.16)
/// or `Code: 27. DB::Exception: …` (current releases).
pub(super) fn exception_code(body: &str) -> Option<u32> {
    let rest = body.trim_start().strip_prefix("Code: ")?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exception_codes_of_old_and_new_servers() {
        assert_eq!(
            exception_code("Code: 27, e.displayText() = DB::Exception: Cannot parse input"),
            Some(27)
        );
        assert_eq!(exception_code("Code: 60. DB::Exception: Table x"), Some(60));
        assert_eq!(exception_code("Bad gateway"), None);
    }

    #[test]
    fn classifies_by_exception_code_before_status() {
        let internal = Some(StatusCode::INTERNAL_SERVER_ERROR);
        assert!(matches!(
            classify(internal, Some(27), ""),
            Failure::Rejected(_)
        ));
        assert!(matches!(
            classify(internal, Some(60), ""),
            Failure::Fatal(_)
        ));
        assert!(matches!(
            classify(internal, Some(241), ""),
            Failure::Retryable(_)
        ));
        assert!(matches!(
            classify(Some(StatusCode::SERVICE_UNAVAILABLE), None, ""),
            Failure::Retryable(_)
        ));
        assert!(matches!(
            classify(Some(StatusCode::BAD_REQUEST), None, ""),
            Failure::Rejected(_)
        ));
        assert!(matches!(
            classify(Some(StatusCode::UNAUTHORIZED), Some(192), ""),
            Failure::Fatal(_)
        ));
    }

    /// The answers of ClickHouse 18.16 to an insert whose rows carry a field the table lacks,
    /// and to one naming a column the table lacks: the table is at fault, not the rows.
    #[test]
    fn a_missing_column_is_the_table_s_fault_not_the_rows() {
        let internal = Some(StatusCode::INTERNAL_SERVER_ERROR);
        let unknown_field = "Code: 117, e.displayText() = DB::Exception: Unknown field found while parsing JSONEachRow format: pod_ip: (at row 1)";
        assert!(matches!(
            classify(internal, exception_code(unknown_field), unknown_field),
            Failure::Table(_)
        ));
        let no_column = "Code: 16, e.displayText() = DB::Exception: No such column zz in table t";
        assert!(matches!(
            classify(internal, exception_code(no_column), no_column),
            Failure::Table(_)
        ));
        let bad_value = "Code: 117, e.displayText() = DB::Exception: Cannot read array from text";
        assert!(matches!(
            classify(internal, exception_code(bad_value), bad_value),
            Failure::Rejected(Rejection {
                code: Some(117),
                ..
            })
        ));
    }

    #[test]
    fn rejections_are_alike_by_code_or_by_message() {
        let rejection = |code: Option<u32>, message: &str| Rejection {
            code,
            message: message.to_owned(),
        };
        assert!(rejection(Some(27), "at row 1").same_reason(&rejection(Some(27), "at row 9")));
        assert!(!rejection(Some(27), "x").same_reason(&rejection(Some(53), "x")));
        assert!(rejection(None, "bad").same_reason(&rejection(None, "bad")));
        assert!(!rejection(None, "bad").same_reason(&rejection(Some(27), "bad!")));
    }

    /// A compression the runtime never ran (it shut down first) is an error, not a panic.
    #[test]
    fn compression_cut_short_by_shutdown_is_an_error() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        runtime.shutdown_background();
        let client = Client::new(
            "http://127.0.0.1:1",
            None,
            Compression::Gzip,
            Duration::from_secs(1),
        );
        let preparing = {
            let _inside = handle.enter();
            client.prepare(Bytes::from_static(b"{}\n"))
        };
        let waiter = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let prepared = waiter.block_on(preparing);
        assert!(
            matches!(&prepared, Err(Failure::Fatal(m)) if m.contains("compressing")),
            "{:?}",
            prepared.err()
        );
    }
}
