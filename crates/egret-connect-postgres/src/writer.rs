//! The database side of the sink, blocking: a `tokio-postgres` client driven by a current-thread runtime of its own
//! (a sink task is one thread; every call blocks it until the server answers or the call times out).

use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

/// One row to write: a text value (or NULL) per column, cast by the server to the column's type.
pub type Row = Vec<Option<String>>;

/// A call that takes longer is abandoned and the connection dropped (a server that hangs is a server gone).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A prepared transaction blocked on a row another prepared transaction holds gives up after this long.
const LOCK_TIMEOUT: &str = "5s";

#[derive(Debug, thiserror::Error)]
pub enum PostgresSinkError {
    #[error("postgres sink: bad connection string: {}", describe(.0))]
    BadConnectionString(tokio_postgres::Error),
    #[error("postgres sink: cannot connect to {server}: {}", describe(.source))]
    Connect {
        server: String,
        source: tokio_postgres::Error,
    },
    #[error("postgres sink: table {table}: {}", describe(.source))]
    Table {
        table: String,
        source: tokio_postgres::Error,
    },
    #[error("postgres sink: {table} has no column {column:?}")]
    NoSuchColumn { table: String, column: String },
    #[error("postgres sink: {what} on {server}: {}", describe(.source))]
    Query {
        what: &'static str,
        server: String,
        source: tokio_postgres::Error,
    },
    #[error("postgres sink: {what} on {server} took longer than {CALL_TIMEOUT:?}")]
    Timeout { what: &'static str, server: String },
    #[error("postgres sink: not connected to {server}; next attempt in {retry_in:?}")]
    NotConnected { server: String, retry_in: Duration },
    #[error("postgres sink: cannot start its runtime: {0}")]
    Runtime(std::io::Error),
    #[error("postgres sink: the saved state does not decode: {0}")]
    BadState(postcard::Error),
    #[error("postgres sink: tuple has no field {field:?} for column {column:?}")]
    MissingField { field: String, column: String },
    #[error("postgres sink: field {field:?} holds a list or map, which no column takes")]
    UnsupportedValue { field: String },
}

/// The server's answer (severity, SQLSTATE, message, detail, hint) when there is one, else the client's error with
/// its cause (`tokio_postgres::Error` alone prints only "db error" or "error connecting to server").
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            s.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            s.push_str(&format!(" hint: {hint}"));
        }
        return s;
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

impl PostgresSinkError {
    /// The connection is unusable (gone, refused, timed out): reconnect before the next call.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            PostgresSinkError::Connect { .. } | PostgresSinkError::Timeout { .. } => true,
            PostgresSinkError::Query { source, .. } => is_connection_error(source),
            _ => false,
        }
    }
}

fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Not a server's answer: I/O, protocol.
        None => true,
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("57P")
        }
    }
}

/// The server refused the row's data (a value of the wrong type, a constraint): writing it again fails again.
fn is_row_error(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        let c = c.code();
        c.starts_with("22") || c.starts_with("23")
    })
}

/// The table and how rows go in.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub table: String,
    pub columns: Vec<String>,
    /// Conflict key (upsert): `INSERT ... ON CONFLICT (key) DO UPDATE` the other columns. Empty: append.
    pub key: Vec<String>,
}

/// How a written batch ends.
pub enum Finish<'a> {
    Commit,
    /// `PREPARE TRANSACTION gid`: durable, invisible, until `COMMIT PREPARED`.
    Prepare(&'a str),
}

/// What a write did.
#[derive(Debug, Default)]
pub struct Written {
    pub rows: u64,
    /// Rows the server refused (their index in the batch and its answer), skipped.
    pub rejected: Vec<(usize, String)>,
}

/// A connection to the sink's database, or none yet.
pub struct PgWriter {
    runtime: Runtime,
    config: tokio_postgres::Config,
    /// host:port/database as user, for messages (never the password).
    server: String,
    spec: TableSpec,
    client: Option<(Client, Statement)>,
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_table(name: &str) -> String {
    name.split('.').map(quote_ident).collect::<Vec<_>>().join(".")
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl PgWriter {
    pub fn new(connection: &str, spec: TableSpec) -> Result<Self, PostgresSinkError> {
        let mut config: tokio_postgres::Config = connection.parse().map_err(PostgresSinkError::BadConnectionString)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let server = format!(
            "{}:{}/{} as {}",
            hosts.join(","),
            config.get_ports().first().copied().unwrap_or(5432),
            config.get_dbname().unwrap_or("(default)"),
            config.get_user().unwrap_or("(default)")
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(PostgresSinkError::Runtime)?;
        Ok(PgWriter {
            runtime,
            config,
            server,
            spec,
            client: None,
        })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn is_connected(&self) -> bool {
        self.client.as_ref().is_some_and(|(c, _)| !c.is_closed())
    }

    pub fn disconnect(&mut self) {
        self.client = None;
    }

    /// Connects and checks the table: it exists, has the columns, and the insert (with its conflict key) is valid.
    /// Errors carry the server's answer.
    pub fn connect(&mut self) -> Result<(), PostgresSinkError> {
        self.client = None;
        let server = self.server.clone();
        let config = self.config.clone();
        let spec = self.spec.clone();
        let connected = self.runtime.block_on(async {
            let (client, connection) = tokio::time::timeout(CALL_TIMEOUT, config.connect(NoTls))
                .await
                .map_err(|_| PostgresSinkError::Timeout {
                    what: "connect",
                    server: server.clone(),
                })?
                .map_err(|source| PostgresSinkError::Connect {
                    server: server.clone(),
                    source,
                })?;
            let server_for_task = server.clone();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(server = %server_for_task, error = %e, "postgres sink: connection ended");
                }
            });
            client
                .batch_execute(&format!("SET lock_timeout = {}", quote_literal(LOCK_TIMEOUT)))
                .await
                .map_err(|source| PostgresSinkError::Query {
                    what: "SET lock_timeout",
                    server: server.clone(),
                    source,
                })?;
            let types = column_types(&client, &spec).await?;
            let sql = insert_sql(&spec, &types);
            let statement = client.prepare(&sql).await.map_err(|source| PostgresSinkError::Table {
                table: spec.table.clone(),
                source,
            })?;
            // Planning checks what parsing does not (an ON CONFLICT key without a unique index): insert nothing once.
            let checked = async {
                client.batch_execute("BEGIN").await?;
                let inserted = insert(&client, &statement, &[], spec.columns.len()).await;
                client.batch_execute("ROLLBACK").await?;
                inserted
            };
            checked.await.map_err(|source| PostgresSinkError::Table {
                table: spec.table.clone(),
                source,
            })?;
            Ok::<_, PostgresSinkError>((client, statement))
        })?;
        tracing::info!(server = %self.server, table = %self.spec.table, "postgres sink: connected");
        self.client = Some(connected);
        Ok(())
    }

    fn timeout(&self, what: &'static str) -> PostgresSinkError {
        PostgresSinkError::Timeout {
            what,
            server: self.server.clone(),
        }
    }

    /// Writes `rows` in one transaction that commits or is prepared. Rows the server refuses are skipped (each row is
    /// tried alone under a savepoint once the batch is refused) and returned.
    pub fn write(&mut self, rows: &[Row], finish: Finish<'_>) -> Result<Written, PostgresSinkError> {
        let server = self.server.clone();
        let columns = self.spec.columns.len();
        let Some((client, statement)) = self.client.as_ref() else {
            return Err(PostgresSinkError::NotConnected {
                server,
                retry_in: Duration::ZERO,
            });
        };
        let query_err = |what: &'static str| {
            let server = server.clone();
            move |source| PostgresSinkError::Query { what, server, source }
        };
        let batch = async {
            client.batch_execute("BEGIN").await.map_err(query_err("BEGIN"))?;
            let mut written = Written::default();
            client
                .batch_execute("SAVEPOINT batch")
                .await
                .map_err(query_err("SAVEPOINT"))?;
            match insert(client, statement, rows, columns).await {
                Ok(n) => written.rows = n,
                Err(e) if is_row_error(&e) && rows.len() > 1 => {
                    client
                        .batch_execute("ROLLBACK TO SAVEPOINT batch")
                        .await
                        .map_err(query_err("ROLLBACK TO SAVEPOINT"))?;
                    for (i, row) in rows.iter().enumerate() {
                        client
                            .batch_execute("SAVEPOINT one")
                            .await
                            .map_err(query_err("SAVEPOINT"))?;
                        match insert(client, statement, std::slice::from_ref(row), columns).await {
                            Ok(n) => written.rows += n,
                            Err(e) if is_row_error(&e) => {
                                written.rejected.push((i, e.to_string()));
                                client
                                    .batch_execute("ROLLBACK TO SAVEPOINT one")
                                    .await
                                    .map_err(query_err("ROLLBACK TO SAVEPOINT"))?;
                            }
                            Err(e) => return Err(query_err("INSERT")(e)),
                        }
                    }
                }
                Err(e) if is_row_error(&e) => written.rejected.push((0, e.to_string())),
                Err(e) => return Err(query_err("INSERT")(e)),
            }
            match finish {
                Finish::Commit => client.batch_execute("COMMIT").await.map_err(query_err("COMMIT"))?,
                Finish::Prepare(gid) => client
                    .batch_execute(&format!("PREPARE TRANSACTION {}", quote_literal(gid)))
                    .await
                    .map_err(query_err("PREPARE TRANSACTION"))?,
            }
            Ok(written)
        };
        let result = self
            .runtime
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, batch).await });
        let result = result.unwrap_or_else(|_| Err(self.timeout("write")));
        match &result {
            Err(e) if e.is_connection_lost() => self.client = None,
            // The transaction is aborted: end it, so the session can take the next one.
            Err(_) => {
                let rolled_back = self
                    .runtime
                    .block_on(async { tokio::time::timeout(CALL_TIMEOUT, client.batch_execute("ROLLBACK")).await });
                if !matches!(rolled_back, Ok(Ok(()))) {
                    self.client = None;
                }
            }
            Ok(_) => {}
        }
        result
    }

    /// `COMMIT PREPARED gid`; a gid that does not exist (committed by an earlier attempt whose answer was lost) is
    /// done.
    pub fn commit_prepared(&mut self, gid: &str) -> Result<(), PostgresSinkError> {
        self.finish_prepared("COMMIT PREPARED", gid)
    }

    /// `ROLLBACK PREPARED gid`; a gid that does not exist is done.
    pub fn rollback_prepared(&mut self, gid: &str) -> Result<(), PostgresSinkError> {
        self.finish_prepared("ROLLBACK PREPARED", gid)
    }

    fn finish_prepared(&mut self, what: &'static str, gid: &str) -> Result<(), PostgresSinkError> {
        let server = self.server.clone();
        let Some((client, _)) = self.client.as_ref() else {
            return Err(PostgresSinkError::NotConnected {
                server,
                retry_in: Duration::ZERO,
            });
        };
        let sql = format!("{what} {}", quote_literal(gid));
        let result = match self
            .runtime
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, client.batch_execute(&sql)).await })
        {
            Err(_) => Err(self.timeout(what)),
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => Ok(()),
            Ok(Err(source)) => Err(PostgresSinkError::Query { what, server, source }),
        };
        if result.as_ref().is_err_and(|e| e.is_connection_lost()) {
            self.client = None;
        }
        result
    }

    /// The gids of prepared transactions in this database that start with `prefix`.
    pub fn prepared_gids(&mut self, prefix: &str) -> Result<Vec<String>, PostgresSinkError> {
        let server = self.server.clone();
        let Some((client, _)) = self.client.as_ref() else {
            return Err(PostgresSinkError::NotConnected {
                server,
                retry_in: Duration::ZERO,
            });
        };
        let sql = "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()";
        let result = match self
            .runtime
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, client.query(sql, &[])).await })
        {
            Err(_) => Err(self.timeout("listing prepared transactions")),
            Ok(Err(source)) => Err(PostgresSinkError::Query {
                what: "listing prepared transactions",
                server,
                source,
            }),
            Ok(Ok(rows)) => Ok(rows
                .iter()
                .filter_map(|r| r.try_get::<_, String>(0).ok())
                .filter(|gid| gid.starts_with(prefix))
                .collect()),
        };
        if result.as_ref().is_err_and(|e| e.is_connection_lost()) {
            self.client = None;
        }
        result
    }
}

/// The table's column types (as `format_type` writes them), in `spec.columns` order.
async fn column_types(client: &Client, spec: &TableSpec) -> Result<Vec<String>, PostgresSinkError> {
    let sql = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
               WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped";
    let rows = client
        .query(sql, &[&quote_table(&spec.table)])
        .await
        .map_err(|source| PostgresSinkError::Table {
            table: spec.table.clone(),
            source,
        })?;
    let mut types = Vec::with_capacity(spec.columns.len());
    for column in &spec.columns {
        let ty = rows
            .iter()
            .find(|r| r.try_get::<_, String>(0).is_ok_and(|n| &n == column))
            .and_then(|r| r.try_get::<_, String>(1).ok())
            .ok_or_else(|| PostgresSinkError::NoSuchColumn {
                table: spec.table.clone(),
                column: column.clone(),
            })?;
        types.push(ty);
    }
    Ok(types)
}

/// `INSERT INTO t (cols) SELECT u.c0::type0, ... FROM UNNEST($1::text[], ...) AS u(c0, ...)`, with
/// `ON CONFLICT (key) DO UPDATE SET` the other columns for an upsert table: one statement and one round trip per
/// batch, whatever its size.
fn insert_sql(spec: &TableSpec, types: &[String]) -> String {
    let columns: Vec<String> = spec.columns.iter().map(|c| quote_ident(c)).collect();
    let casts: Vec<String> = types.iter().enumerate().map(|(i, t)| format!("u.c{i}::{t}")).collect();
    let arrays: Vec<String> = (1..=types.len()).map(|i| format!("${i}::text[]")).collect();
    let names: Vec<String> = (0..types.len()).map(|i| format!("c{i}")).collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) SELECT {} FROM UNNEST({}) AS u({})",
        quote_table(&spec.table),
        columns.join(", "),
        casts.join(", "),
        arrays.join(", "),
        names.join(", ")
    );
    if !spec.key.is_empty() {
        let key: Vec<String> = spec.key.iter().map(|c| quote_ident(c)).collect();
        let updates: Vec<String> = spec
            .columns
            .iter()
            .filter(|c| !spec.key.contains(c))
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
            .collect();
        if updates.is_empty() {
            sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", key.join(", ")));
        } else {
            sql.push_str(&format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                key.join(", "),
                updates.join(", ")
            ));
        }
    }
    sql
}

async fn insert(
    client: &Client,
    statement: &Statement,
    rows: &[Row],
    columns: usize,
) -> Result<u64, tokio_postgres::Error> {
    let mut arrays: Vec<Vec<Option<&str>>> = vec![Vec::with_capacity(rows.len()); columns];
    for row in rows {
        for (i, v) in row.iter().enumerate().take(columns) {
            arrays[i].push(v.as_deref());
        }
    }
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = arrays
        .iter()
        .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    client.execute(statement, &params).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_insert_sql_upserts_on_the_key_and_quotes_names() {
        let spec = TableSpec {
            table: "public.word_counts".into(),
            columns: vec!["word".into(), "count".into()],
            key: vec!["word".into()],
        };
        assert_eq!(
            insert_sql(&spec, &["text".into(), "bigint".into()]),
            "INSERT INTO \"public\".\"word_counts\" (\"word\", \"count\") SELECT u.c0::text, u.c1::bigint FROM \
             UNNEST($1::text[], $2::text[]) AS u(c0, c1) ON CONFLICT (\"word\") DO UPDATE SET \"count\" = \
             EXCLUDED.\"count\""
        );
        let append = TableSpec { key: vec![], ..spec };
        assert!(!insert_sql(&append, &["text".into(), "bigint".into()]).contains("ON CONFLICT"));
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
