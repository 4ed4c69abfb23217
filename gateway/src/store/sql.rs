//! The SQL engines: SQLite (embedded, one file, WAL) and PostgreSQL, through sqlx with runtime
//! queries. Both share one schema shape (`migrations/<engine>/`) and, where the SQL is the same,
//! one implementation: [`on_pool!`] expands a block once per engine, so a query is written once
//! and type-checked against both drivers. Only the queue claim differs (PostgreSQL's
//! `FOR UPDATE SKIP LOCKED`; SQLite has one writer at a time, so one `UPDATE` is already atomic).
//!
//! Positions: a response's input items are numbered from 0 and its output items from
//! [`OUTPUT_BASE`], so one `ORDER BY position` gives "input, then output" without counting.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, SqlSafeStr};

use super::{
    Access, Claim, ContainerStatus, Conversation, ExpiredLease, ListPage, NewResponse, Order,
    Owner, Page, SandboxRef, Store, StoreSettings, StoredContainer, StoredContainerFile,
    StoredEvent, StoredResponse, is_terminal, item_id, now_millis, output_items, page_of,
};
use crate::error::{Error, Result};
use crate::openresponses::response::ResponseStatus;

const OUTPUT_BASE: i64 = 1 << 40;

/// Migrations, embedded in the binary (one list per engine, from the top-level `migrations/`).
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../../migrations/sqlite/0001_init.sql")),
    (2, "containers", include_str!("../../../migrations/sqlite/0002_containers.sql")),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../../migrations/postgres/0001_init.sql")),
    (2, "containers", include_str!("../../../migrations/postgres/0002_containers.sql")),
];

pub struct SqlStore {
    pool: Pool,
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the engine's pool; the body is compiled once per engine.
macro_rules! on_pool {
    ($self:expr, |$pool:ident| $body:expr) => {
        match &$self.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// The columns [`decode_response!`] reads.
const RESPONSE_COLUMNS: &str = "id, tenant, owner, created_at, status, previous_response_id, conversation_id, response, cancel_requested";

macro_rules! decode_response {
    ($row:expr) => {{
        let row = $row;
        let status = ResponseStatus::parse(&row.try_get::<String, _>("status")?)?;
        let mut response: Value = parse_json(&row.try_get::<String, _>("response")?)?;
        if let Some(object) = response.as_object_mut() {
            object.insert("status".into(), Value::from(status.as_str()));
        }
        StoredResponse {
            id: row.try_get("id")?,
            owner: Owner { tenant: row.try_get("tenant")?, user: row.try_get("owner")? },
            created_at: row.try_get("created_at")?,
            status,
            previous_response_id: row.try_get("previous_response_id")?,
            conversation_id: row.try_get("conversation_id")?,
            response,
            cancel_requested: row.try_get("cancel_requested")?,
        }
    }};
}

/// The columns [`decode_container!`] reads.
const CONTAINER_COLUMNS: &str = "id, tenant, owner, name, created_at, status, last_active_at, idle_ms, memory_limit, claim_id, pool, agent_endpoint, agent_spiffe_id, claim_expires_at, session_id";

macro_rules! decode_container {
    ($row:expr) => {{
        let row = $row;
        StoredContainer {
            id: row.try_get("id")?,
            owner: Owner { tenant: row.try_get("tenant")?, user: row.try_get("owner")? },
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
            status: ContainerStatus::parse(&row.try_get::<String, _>("status")?)?,
            last_active_at: row.try_get("last_active_at")?,
            idle_ms: row.try_get("idle_ms")?,
            memory_limit: row.try_get("memory_limit")?,
            sandbox: SandboxRef {
                claim_id: row.try_get("claim_id")?,
                pool: row.try_get("pool")?,
                agent_endpoint: row.try_get("agent_endpoint")?,
                agent_spiffe_id: row.try_get("agent_spiffe_id")?,
                claim_expires_at: row.try_get("claim_expires_at")?,
                session_id: row.try_get("session_id")?,
            },
        }
    }};
}

/// The columns [`decode_container_file!`] reads.
const CONTAINER_FILE_COLUMNS: &str =
    "id, container_id, tenant, owner, path, bytes, created_at, source";

macro_rules! decode_container_file {
    ($row:expr) => {{
        let row = $row;
        StoredContainerFile {
            id: row.try_get("id")?,
            container_id: row.try_get("container_id")?,
            owner: Owner { tenant: row.try_get("tenant")?, user: row.try_get("owner")? },
            path: row.try_get("path")?,
            bytes: row.try_get("bytes")?,
            created_at: row.try_get("created_at")?,
            source: row.try_get("source")?,
        }
    }};
}

fn parse_json(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::Internal(format!("stored JSON is corrupt: {e}")))
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("JSON values always serialize")
}

fn sql(text: String) -> impl SqlSafeStr {
    // Only fixed fragments (column lists, ORDER BY direction) are formatted in; values are bound.
    AssertSqlSafe(text)
}

impl SqlStore {
    /// Connects (SQLite: creates the file and its directory when missing). Does not migrate.
    pub async fn connect(settings: &StoreSettings) -> Result<Self> {
        let url = settings.url.as_str();
        let pool = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| Error::Internal(format!("store.url `{url}`: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // In WAL mode NORMAL survives a crash of the gateway (what has committed is in
                // the WAL file); only an OS crash or power loss may drop the last commits.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(settings.acquire_timeout);
            if let Some(dir) = options.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::Internal(format!("cannot create the directory {}: {e}", dir.display()))
                })?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(settings.acquire_timeout)
                .connect_with(options)
                .await
                .map_err(db_error)?;
            Pool::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| Error::Internal(format!("store.url: {e}")))?;
            let pool = PgPoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(settings.acquire_timeout)
                .connect_with(options)
                .await
                .map_err(db_error)?;
            Pool::Postgres(pool)
        } else {
            return Err(Error::Internal(format!(
                "store.url `{url}` is not `memory`, `sqlite://PATH` or `postgres://...`"
            )));
        };
        Ok(Self { pool })
    }

    /// Applies the embedded migrations that have not run yet.
    pub async fn migrate(&self) -> Result<()> {
        let list = match self.pool {
            Pool::Sqlite(_) => SQLITE_MIGRATIONS,
            Pool::Postgres(_) => POSTGRES_MIGRATIONS,
        };
        let migrations = list
            .iter()
            .map(|(version, description, text)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    text.into_sql_str(),
                    false,
                )
            })
            .collect();
        let migrator = Migrator::with_migrations(migrations);
        let result = on_pool!(self, |pool| migrator.run(pool).await);
        result.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(err) => db_error(err),
            other => Error::Internal(format!("database migration failed: {other}")),
        })
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }

    fn claim_sql(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => {
                "UPDATE responses SET status = 'in_progress', worker = $1, lease_expires_at = $2, attempts = attempts + 1 \
                 WHERE id = (SELECT id FROM responses WHERE status = 'queued' ORDER BY id LIMIT 1) \
                 RETURNING id, tenant, owner, request, attempts"
            }
            Pool::Postgres(_) => {
                "WITH next AS (SELECT id FROM responses WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 UPDATE responses SET status = 'in_progress', worker = $1, lease_expires_at = $2, attempts = responses.attempts + 1 \
                 FROM next WHERE responses.id = next.id \
                 RETURNING responses.id, responses.tenant, responses.owner, responses.request, responses.attempts"
            }
        }
    }
}

/// Classifies a database error: the database being unreachable (or restarting, or overloaded)
/// is a 503 the client may retry; anything else is a bug or corruption, a 500.
pub fn db_error(err: sqlx::Error) -> Error {
    let unavailable = match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // PostgreSQL: 08 connection exceptions, 53 insufficient resources, 57P admin
            // shutdown / crash / cannot connect now. SQLite: BUSY (5), LOCKED (6), IOERR (10),
            // FULL (13), CANTOPEN (14), by primary result code.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14))
        }
        _ => false,
    };
    if unavailable {
        Error::StoreUnavailable(err.to_string())
    } else {
        Error::Internal(format!("database error: {err}"))
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        db_error(err)
    }
}

/// `(low, high)` exclusive bounds in ascending terms for a page's `after`/`before`.
fn bounds(page: &Page) -> (Option<&str>, Option<&str>) {
    match page.order {
        Order::Asc => (page.after.as_deref(), page.before.as_deref()),
        Order::Desc => (page.before.as_deref(), page.after.as_deref()),
    }
}

fn direction(order: Order) -> &'static str {
    match order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    }
}

fn fetch_limit(page: &Page) -> i64 {
    page.limit as i64 + 1
}

impl Store for SqlStore {
    fn engine(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    fn check_ready(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            on_pool!(self, |pool| {
                sqlx::query("SELECT 1").execute(pool).await?;
            });
            Ok(())
        })
    }

    fn save_response<'a>(&'a self, response: &'a NewResponse) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let response_json = to_json(&response.response);
            let request_json = response.request.as_ref().map(to_json);
            let outputs = output_items(&response.response);
            let now = crate::ids::unix_now();
            on_pool!(self, |pool| {
                let mut tx = pool.begin().await?;
                let inserted = sqlx::query(
                    "INSERT INTO responses (id, tenant, owner, created_at, status, previous_response_id, conversation_id, response, request) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&response.id)
                .bind(&response.owner.tenant)
                .bind(&response.owner.user)
                .bind(response.created_at)
                .bind(response.status.as_str())
                .bind(&response.previous_response_id)
                .bind(&response.conversation_id)
                .bind(&response_json)
                .bind(&request_json)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !inserted {
                    let updated = sqlx::query(
                        "UPDATE responses SET status = $1, response = $2, request = $3, previous_response_id = $4, conversation_id = $5 \
                         WHERE id = $6 AND tenant = $7 AND owner = $8",
                    )
                    .bind(response.status.as_str())
                    .bind(&response_json)
                    .bind(&request_json)
                    .bind(&response.previous_response_id)
                    .bind(&response.conversation_id)
                    .bind(&response.id)
                    .bind(&response.owner.tenant)
                    .bind(&response.owner.user)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if updated != 1 {
                        return Err(Error::Internal(format!(
                            "response {} exists with another owner",
                            response.id
                        )));
                    }
                    sqlx::query("DELETE FROM response_items WHERE response_id = $1")
                        .bind(&response.id)
                        .execute(&mut *tx)
                        .await?;
                }
                let items = response
                    .input
                    .iter()
                    .enumerate()
                    .map(|(i, item)| (i as i64, "input", item))
                    .chain(
                        outputs
                            .iter()
                            .enumerate()
                            .map(|(i, item)| (OUTPUT_BASE + i as i64, "output", item)),
                    )
                    .collect::<Vec<_>>();
                if !items.is_empty() {
                    let mut insert = QueryBuilder::new(
                        "INSERT INTO response_items (response_id, position, kind, id, tenant, owner, data) ",
                    );
                    insert.push_values(&items, |mut row, (position, kind, item)| {
                        row.push_bind(&response.id)
                            .push_bind(*position)
                            .push_bind(*kind)
                            .push_bind(item_id(item))
                            .push_bind(&response.owner.tenant)
                            .push_bind(&response.owner.user)
                            .push_bind(to_json(item));
                    });
                    insert.build().execute(&mut *tx).await?;
                }
                if let Some(conversation) = &response.conversation_id
                    && is_terminal(response.status)
                {
                    let joining: Vec<&Value> = response.input.iter().chain(outputs).collect();
                    if !joining.is_empty() {
                        let mut insert = QueryBuilder::new(
                            "INSERT INTO conversation_items (conversation_id, id, tenant, owner, created_at, data) ",
                        );
                        insert.push_values(&joining, |mut row, item| {
                            row.push_bind(conversation)
                                .push_bind(item_id(item))
                                .push_bind(&response.owner.tenant)
                                .push_bind(&response.owner.user)
                                .push_bind(now)
                                .push_bind(to_json(item));
                        });
                        insert.push(" ON CONFLICT (conversation_id, id) DO NOTHING");
                        insert.build().execute(&mut *tx).await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn update_response<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
        status: ResponseStatus,
        response: &'a Value,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let response_json = to_json(response);
            let outputs = output_items(response);
            let terminal = is_terminal(status);
            let now = crate::ids::unix_now();
            on_pool!(self, |pool| {
                let mut tx = pool.begin().await?;
                let row = sqlx::query(
                    "UPDATE responses SET status = $1, response = $2, \
                     worker = CASE WHEN $3 THEN NULL ELSE worker END, \
                     lease_expires_at = CASE WHEN $3 THEN NULL ELSE lease_expires_at END \
                     WHERE id = $4 AND tenant = $5 AND ($6 IS NULL OR owner = $6) \
                     RETURNING tenant, owner, conversation_id",
                )
                .bind(status.as_str())
                .bind(&response_json)
                .bind(terminal)
                .bind(id)
                .bind(&access.tenant)
                .bind(&access.user)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(false);
                };
                let tenant: String = row.try_get("tenant")?;
                let owner: String = row.try_get("owner")?;
                let conversation: Option<String> = row.try_get("conversation_id")?;
                sqlx::query(
                    "DELETE FROM response_items WHERE response_id = $1 AND kind = 'output'",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                if !outputs.is_empty() {
                    let mut insert = QueryBuilder::new(
                        "INSERT INTO response_items (response_id, position, kind, id, tenant, owner, data) ",
                    );
                    insert.push_values(outputs.iter().enumerate(), |mut row, (i, item)| {
                        row.push_bind(id)
                            .push_bind(OUTPUT_BASE + i as i64)
                            .push_bind("output")
                            .push_bind(item_id(item))
                            .push_bind(&tenant)
                            .push_bind(&owner)
                            .push_bind(to_json(item));
                    });
                    insert.build().execute(&mut *tx).await?;
                }
                if terminal && let Some(conversation) = &conversation {
                    // The turn joins its conversation whole: its input, then its output.
                    let input_rows = sqlx::query(
                        "SELECT id, data FROM response_items WHERE response_id = $1 AND kind = 'input' ORDER BY position",
                    )
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut joining: Vec<(String, String)> = Vec::new();
                    for row in &input_rows {
                        joining.push((row.try_get("id")?, row.try_get("data")?));
                    }
                    joining.extend(
                        outputs.iter().map(|item| (item_id(item).to_string(), to_json(item))),
                    );
                    if !joining.is_empty() {
                        let mut insert = QueryBuilder::new(
                            "INSERT INTO conversation_items (conversation_id, id, tenant, owner, created_at, data) ",
                        );
                        insert.push_values(&joining, |mut row, (item_id, data)| {
                            row.push_bind(conversation)
                                .push_bind(item_id)
                                .push_bind(&tenant)
                                .push_bind(&owner)
                                .push_bind(now)
                                .push_bind(data);
                        });
                        insert.push(" ON CONFLICT (conversation_id, id) DO NOTHING");
                        insert.build().execute(&mut *tx).await?;
                    }
                }
                tx.commit().await?;
                Ok(true)
            })
        })
    }

    fn get_response<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredResponse>>> {
        Box::pin(async move {
            on_pool!(self, |pool| {
                let row = sqlx::query(sql(format!(
                    "SELECT {RESPONSE_COLUMNS} FROM responses WHERE id = $1 AND tenant = $2 AND ($3 IS NULL OR owner = $3)"
                )))
                .bind(id)
                .bind(&access.tenant)
                .bind(&access.user)
                .fetch_optional(pool)
                .await?;
                match row {
                    Some(row) => Ok(Some(decode_response!(&row))),
                    None => Ok(None),
                }
            })
        })
    }

    fn delete_response<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            on_pool!(self, |pool| {
                let deleted = sqlx::query(
                    "DELETE FROM responses WHERE id = $1 AND tenant = $2 AND ($3 IS NULL OR owner = $3)",
                )
                .bind(id)
                .bind(&access.tenant)
                .bind(&access.user)
                .execute(pool)
                .await?
                .rows_affected();
                Ok(deleted == 1)
            })
        })
    }

    fn list_responses<'a>(
        &'a self,
        access: &'a Access,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<ListPage<StoredResponse>>> {
        Box::pin(async move {
            let (low, high) = bounds(page);
            let text = format!(
                "SELECT {RESPONSE_COLUMNS} FROM responses WHERE tenant = $1 AND ($2 IS NULL OR owner = $2) \
                 AND ($3 IS NULL OR id > $3) AND ($4 IS NULL OR id < $4) ORDER BY id {} LIMIT $5",
                direction(page.order)
            );
            on_pool!(self, |pool| {
                let rows = sqlx::query(sql(text))
                    .bind(&access.tenant)
                    .bind(&access.user)
                    .bind(low)
                    .bind(high)
                    .bind(fetch_limit(page))
                    .fetch_all(pool)
                    .await?;
                let mut data = Vec::with_capacity(rows.len());
                for row in &rows {
                    data.push(decode_response!(row));
                }
                Ok(page_of(data, page.limit))
            })
        })
    }

    fn list_input_items<'a>(
        &'a self,
        access: &'a Access,
        response_id: &'a str,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<Option<ListPage<Value>>>> {
        Box::pin(async move {
            let (low, high) = bounds(page);
            let text = format!(
                "SELECT data FROM response_items WHERE response_id = $1 AND kind = 'input' AND tenant = $2 AND ($3 IS NULL OR owner = $3) \
                 AND ($4 IS NULL OR position > (SELECT position FROM response_items WHERE response_id = $1 AND kind = 'input' AND id = $4)) \
                 AND ($5 IS NULL OR position < (SELECT position FROM response_items WHERE response_id = $1 AND kind = 'input' AND id = $5)) \
                 ORDER BY position {} LIMIT $6",
                direction(page.order)
            );
            on_pool!(self, |pool| {
                let visible = sqlx::query(
                    "SELECT 1 FROM responses WHERE id = $1 AND tenant = $2 AND ($3 IS NULL OR owner = $3)",
                )
                .bind(response_id)
                .bind(&access.tenant)
                .bind(&access.user)
                .fetch_optional(pool)
                .await?
                .is_some();
                if !visible {
                    return Ok(None);
                }
                let rows = sqlx::query(sql(text))
                    .bind(response_id)
                    .bind(&access.tenant)
                    .bind(&access.user)
                    .bind(low)
                    .bind(high)
                    .bind(fetch_limit(page))
                    .fetch_all(pool)
                    .await?;
                let data = rows
                    .iter()
                    .map(|row| parse_json(&row.try_get::<String, _>("data")?))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Some(page_of(data, page.limit)))
            })
        })
    }

    fn response_items<'a>(
        &'a self,
        access: &'a Access,
        response_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Value>>>> {
        Box::pin(async move {
            on_pool!(self, |pool| {
                let visible = sqlx::query(
                    "SELECT 1 FROM responses WHERE id = $1 AND tenant = $2 AND ($3 IS NULL OR owner = $3)",
                )
                .bind(response_id)
                .bind(&access.tenant)
                .bind(&access.user)
                .fetch_optional(pool)
                .await?
                .is_some();
                if !visible {
                    return Ok(None);
                }
                let rows = sqlx::query(
                    "SELECT data FROM response_items WHERE response_id = $1 AND tenant = $2 AND ($3 IS NULL OR owner = $3) ORDER BY position",
                )
                .bind(response_id)
                .bind(&access.tenant)
                .bind(&access.user)
                .fetch_all(pool)
                .await?;
                let items = rows
                    .iter()
                    .map(|row| parse_json(&row.try_get::<String, _>("data")?))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Some(items))
            })
        })
    }

    fn find_items<'a>(
        &'a self,
        access: &'a Access,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Value>>> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut found: Vec<Value> = Vec::new();
            for table in ["response_items", "conversation_items"] {
                let rows = on_pool!(self, |pool| {
                    let mut query =
                        QueryBuilder::new(format!("SELECT data FROM {table} WHERE tenant = "));
                    query.push_bind(&access.tenant);
                    if let Some(user) = &access.user {
                        query.push(" AND owner = ").push_bind(user);
                    }
                    query.push(" AND id IN (");
                    let mut list = query.separated(", ");
                    for id in ids {
                        list.push_bind(id);
                    }
                    query.push(")");
                    let rows = query.build().fetch_all(pool).await?;
                    rows.iter()
                        .map(|row| row.try_get::<String, _>("data"))
                        .collect::<std::result::Result<Vec<_>, _>>()?
                });
                for text in rows {
                    let item = parse_json(&text)?;
                    if !found.iter().any(|f| item_id(f) == item_id(&item)) {
                        found.push(item);
                    }
                }
            }
            Ok(found)
        })
    }

    fn claim_queued<'a>(
        &'a self,
        worker: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<Claim>>> {
        Box::pin(async move {
            let lease_expires_at = now_millis() + lease.as_millis() as i64;
            let claim_sql = self.claim_sql();
            on_pool!(self, |pool| {
                let row = sqlx::query(claim_sql)
                    .bind(worker)
                    .bind(lease_expires_at)
                    .fetch_optional(pool)
                    .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let request: Option<String> = row.try_get("request")?;
                Ok(Some(Claim {
                    id: row.try_get("id")?,
                    owner: Owner { tenant: row.try_get("tenant")?, user: row.try_get("owner")? },
                    request: match request {
                        Some(text) => parse_json(&text)?,
                        None => Value::Null,
                    },
                    attempts: row.try_get::<i64, _>("attempts")? as u32,
                    lease_expires_at,
                }))
            })
        })
    }

    fn heartbeat<'a>(
        &'a self,
        id: &'a str,
        worker: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let until = now_millis() + lease.as_millis() as i64;
            on_pool!(self, |pool| {
                let updated = sqlx::query(
                    "UPDATE responses SET lease_expires_at = $1 WHERE id = $2 AND worker = $3 AND status = 'in_progress'",
                )
                .bind(until)
                .bind(id)
                .bind(worker)
                .execute(pool)
                .await?
                .rows_affected();
                Ok(updated == 1)
            })
        })
    }

    fn expired_leases(&self, limit: usize) -> BoxFuture<'_, Result<Vec<ExpiredLease>>> {
        Box::pin(async move {
            let now = now_millis();
            on_pool!(self, |pool| {
                let rows = sqlx::query(
                    "SELECT id, tenant, owner, worker, attempts FROM responses \
                     WHERE status = 'in_progress' AND worker IS NOT NULL AND lease_expires_at < $1 \
                     ORDER BY lease_expires_at LIMIT $2",
                )
                .bind(now)
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(ExpiredLease {
                            id: row.try_get("id")?,
                            owner: Owner {
                                tenant: row.try_get("tenant")?,
                                user: row.try_get("owner")?,
                            },
                            worker: row.try_get("worker")?,
                            attempts: row.try_get::<i64, _>("attempts")? as u32,
                        })
                    })
                    .collect()
            })
        })
    }

    fn requeue<'a>(&'a self, id: &'a str, worker: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let now = now_millis();
            on_pool!(self, |pool| {
                let updated = sqlx::query(
                    "UPDATE responses SET status = 'queued', worker = NULL, lease_expires_at = NULL \
                     WHERE id = $1 AND worker = $2 AND status = 'in_progress' AND lease_expires_at < $3",
                )
                .bind(id)
                .bind(worker)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected();
                Ok(updated == 1)
            })
        })
    }

    fn append_events<'a>(
        &'a self,
        owner: &'a Owner,
        response_id: &'a str,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(());
            }
            on_pool!(self, |pool| {
                let mut insert = QueryBuilder::new(
                    "INSERT INTO response_events (response_id, sequence_number, tenant, owner, data) ",
                );
                insert.push_values(events, |mut row, event| {
                    row.push_bind(response_id)
                        .push_bind(event.sequence_number as i64)
                        .push_bind(&owner.tenant)
                        .push_bind(&owner.user)
                        .push_bind(to_json(&event.event));
                });
                insert.push(" ON CONFLICT (response_id, sequence_number) DO NOTHING");
                insert.build().execute(pool).await?;
                Ok(())
            })
        })
    }

    fn events_after<'a>(
        &'a self,
        access: &'a Access,
        response_id: &'a str,
        after: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>>> {
        Box::pin(async move {
            let after = after.map_or(-1, |a| a.min(i64::MAX as u64) as i64);
            on_pool!(self, |pool| {
                let rows = sqlx::query(
                    "SELECT sequence_number, data FROM response_events \
                     WHERE response_id = $1 AND tenant = $2 AND ($3 IS NULL OR owner = $3) AND sequence_number > $4 \
                     ORDER BY sequence_number LIMIT $5",
                )
                .bind(response_id)
                .bind(&access.tenant)
                .bind(&access.user)
                .bind(after)
                .bind(limit.min(i64::MAX as usize) as i64)
                .fetch_all(pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok(StoredEvent {
                            sequence_number: row.try_get::<i64, _>("sequence_number")? as u64,
                            event: parse_json(&row.try_get::<String, _>("data")?)?,
                        })
                    })
                    .collect()
            })
        })
    }

    fn request_cancel<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredResponse>>> {
        Box::pin(async move {
            on_pool!(self, |pool| {
                let row = sqlx::query(sql(format!(
                    "UPDATE responses SET cancel_requested = TRUE WHERE id = $1 AND tenant = $2 AND ($3 IS NULL OR owner = $3) \
                     RETURNING {RESPONSE_COLUMNS}"
                )))
                .bind(id)
                .bind(&access.tenant)
                .bind(&access.user)
                .fetch_optional(pool)
                .await?;
                match row {
                    Some(row) => Ok(Some(decode_response!(&row))),
                    None => Ok(None),
                }
            })
        })
    }

    fn cancel_requested<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            on_pool!(self, |pool| {
                let row = sqlx::query("SELECT cancel_requested FROM responses WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
                match row {
                    Some(row) => Ok(row.try_get::<bool, _>("cancel_requested")?),
                    None => Ok(false),
                }
            })
        })
    }

    fn create_conversation<'a>(
        &'a self,
        conversation: &'a Conversation,
        items: &'a [Value],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let metadata = to_json(&conversation.metadata);
            on_pool!(self, |pool| {
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO conversations (id, tenant, owner, created_at, metadata) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&conversation.id)
                .bind(&conversation.owner.tenant)
                .bind(&conversation.owner.user)
                .bind(conversation.created_at)
                .bind(&metadata)
                .execute(&mut *tx)
                .await?;
                if !items.is_empty() {
                    let mut insert = QueryBuilder::new(
                        "INSERT INTO conversation_items (conversation_id, id, tenant, owner, created_at, data) ",
                    );
                    insert.push_values(items, |mut row, item| {
                        row.push_bind(&conversation.id)
                            .push_bind(item_id(item))
                            .push_bind(&conversation.owner.tenant)
                            .push_bind(&conversation.owner.user)
                            .push_bind(conversation.created_at)
                            .push_bind(to_json(item));
                    });
                    insert.push(" ON CONFLICT (conversation_id, id) DO NOTHING");
                    insert.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn get_conversation<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Conversation>>> {
        Box::pin(async move {
            on_pool!(self, |pool| {
                let row = sqlx::query(
                    "SELECT id, tenant, owner, created_at, metadata FROM conversations \
                     WHERE id = $1 AND tenant = $2 AND ($3 IS NULL OR owner = $3)",
                )
                .bind(id)
                .bind(&access.tenant)
                .bind(&access.user)
                .fetch_optional(pool)
                .await?;
                match row {
                    Some(row) => Ok(Some(decode_conversation(
                        row.try_get("id")?,
                        row.try_get("tenant")?,
                        row.try_get("owner")?,
                        row.try_get("created_at")?,
                        &row.try_get::<String, _>("metadata")?,
                    )?)),
                    None => Ok(None),
                }
            })
        })
    }

    fn update_conversation<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
        metadata: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<Option<Conversation>>> {
        Box::pin(async move {
            let metadata = to_json(metadata);
            on_pool!(self, |pool| {
                let row = sqlx::query(
                    "UPDATE conversations SET metadata = $1 WHERE id = $2 AND tenant = $3 AND ($4 IS NULL OR owner = $4) \
                     RETURNING id, tenant, owner, created_at, metadata",
                )
                .bind(&metadata)
                .bind(id)
                .bind(&access.tenant)
                .bind(&access.user)
                .fetch_optional(pool)
                .await?;
                match row {
                    Some(row) => Ok(Some(decode_conversation(
                        row.try_get("id")?,
                        row.try_get("tenant")?,
                        row.try_get("owner")?,
                        row.try_get("created_at")?,
                        &row.try_get::<String, _>("metadata")?,
                    )?)),
                    None => Ok(None),
                }
            })
        })
    }

    fn delete_conversation<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            on_pool!(self, |pool| {
                let deleted = sqlx::query(
                    "DELETE FROM conversations WHERE id = $1 AND tenant = $2 AND ($3 IS NULL OR owner = $3)",
                )
                .bind(id)
                .bind(&access.tenant)
                .bind(&access.user)
                .execute(pool)
                .await?
                .rows_affected();
                Ok(deleted == 1)
            })
        })
    }

    fn append_conversation_items<'a>(
        &'a self,
        access: &'a Access,
        conversation_id: &'a str,
        items: &'a [Value],
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let Some(conversation) = self.get_conversation(access, conversation_id).await? else {
                return Ok(false);
            };
            if items.is_empty() {
                return Ok(true);
            }
            let now = crate::ids::unix_now();
            on_pool!(self, |pool| {
                let mut insert = QueryBuilder::new(
                    "INSERT INTO conversation_items (conversation_id, id, tenant, owner, created_at, data) ",
                );
                insert.push_values(items, |mut row, item| {
                    row.push_bind(&conversation.id)
                        .push_bind(item_id(item))
                        .push_bind(&conversation.owner.tenant)
                        .push_bind(&conversation.owner.user)
                        .push_bind(now)
                        .push_bind(to_json(item));
                });
                insert.push(" ON CONFLICT (conversation_id, id) DO NOTHING");
                insert.build().execute(pool).await?;
                Ok(true)
            })
        })
    }

    fn list_conversation_items<'a>(
        &'a self,
        access: &'a Access,
        conversation_id: &'a str,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<Option<ListPage<Value>>>> {
        Box::pin(async move {
            if self.get_conversation(access, conversation_id).await?.is_none() {
                return Ok(None);
            }
            let (low, high) = bounds(page);
            let text = format!(
                "SELECT data FROM conversation_items WHERE conversation_id = $1 AND tenant = $2 AND ($3 IS NULL OR owner = $3) \
                 AND ($4 IS NULL OR seq > (SELECT seq FROM conversation_items WHERE conversation_id = $1 AND id = $4)) \
                 AND ($5 IS NULL OR seq < (SELECT seq FROM conversation_items WHERE conversation_id = $1 AND id = $5)) \
                 ORDER BY seq {} LIMIT $6",
                direction(page.order)
            );
            on_pool!(self, |pool| {
                let rows = sqlx::query(sql(text))
                    .bind(conversation_id)
                    .bind(&access.tenant)
                    .bind(&access.user)
                    .bind(low)
                    .bind(high)
                    .bind(fetch_limit(page))
                    .fetch_all(pool)
                    .await?;
                let data = rows
                    .iter()
                    .map(|row| parse_json(&row.try_get::<String, _>("data")?))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Some(page_of(data, page.limit)))
            })
        })
    }

    fn get_conversation_item<'a>(
        &'a self,
        access: &'a Access,
        conversation_id: &'a str,
        item_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>>> {
        Box::pin(async move {
            on_pool!(self, |pool| {
                let row = sqlx::query(
                    "SELECT data FROM conversation_items WHERE conversation_id = $1 AND id = $2 AND tenant = $3 AND ($4 IS NULL OR owner = $4)",
                )
                .bind(conversation_id)
                .bind(item_id)
                .bind(&access.tenant)
                .bind(&access.user)
                .fetch_optional(pool)
                .await?;
                match row {
                    Some(row) => Ok(Some(parse_json(&row.try_get::<String, _>("data")?)?)),
                    None => Ok(None),
                }
            })
        })
    }

    fn delete_conversation_item<'a>(
        &'a self,
        access: &'a Access,
        conversation_id: &'a str,
        item_id: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            on_pool!(self, |pool| {
                let deleted = sqlx::query(
                    "DELETE FROM conversation_items WHERE conversation_id = $1 AND id = $2 AND tenant = $3 AND ($4 IS NULL OR owner = $4)",
                )
                .bind(conversation_id)
                .bind(item_id)
                .bind(&access.tenant)
                .bind(&access.user)
                .execute(pool)
                .await?
                .rows_affected();
                Ok(deleted == 1)
            })
        })
    }

    // === containers ===

    fn create_container<'a>(&'a self, container: &'a StoredContainer) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            on_pool!(self, |pool| {
                sqlx::query(
                    "INSERT INTO containers (id, tenant, owner, name, created_at, status, last_active_at, idle_ms, memory_limit, \
                     claim_id, pool, agent_endpoint, agent_spiffe_id, claim_expires_at, session_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                )
                .bind(&container.id)
                .bind(&container.owner.tenant)
                .bind(&container.owner.user)
                .bind(&container.name)
                .bind(container.created_at)
                .bind(container.status.as_str())
                .bind(container.last_active_at)
                .bind(container.idle_ms)
                .bind(&container.memory_limit)
                .bind(&container.sandbox.claim_id)
                .bind(&container.sandbox.pool)
                .bind(&container.sandbox.agent_endpoint)
                .bind(&container.sandbox.agent_spiffe_id)
                .bind(container.sandbox.claim_expires_at)
                .bind(&container.sandbox.session_id)
                .execute(pool)
                .await?;
            });
            Ok(())
        })
    }

    fn get_container<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredContainer>>> {
        Box::pin(async move {
            let text = format!(
                "SELECT {CONTAINER_COLUMNS} FROM containers WHERE id = $1 AND tenant = $2 AND ($3 IS NULL OR owner = $3)"
            );
            on_pool!(self, |pool| {
                let row = sqlx::query(sql(text))
                    .bind(id)
                    .bind(&access.tenant)
                    .bind(&access.user)
                    .fetch_optional(pool)
                    .await?;
                match row {
                    Some(row) => Ok(Some(decode_container!(&row))),
                    None => Ok(None),
                }
            })
        })
    }

    fn list_containers<'a>(
        &'a self,
        access: &'a Access,
        page: &'a Page,
        name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<ListPage<StoredContainer>>> {
        Box::pin(async move {
            let (low, high) = bounds(page);
            let text = format!(
                "SELECT {CONTAINER_COLUMNS} FROM containers WHERE tenant = $1 AND ($2 IS NULL OR owner = $2) \
                 AND ($3 IS NULL OR id > $3) AND ($4 IS NULL OR id < $4) AND ($6 IS NULL OR name = $6) ORDER BY id {} LIMIT $5",
                direction(page.order)
            );
            on_pool!(self, |pool| {
                let rows = sqlx::query(sql(text))
                    .bind(&access.tenant)
                    .bind(&access.user)
                    .bind(low)
                    .bind(high)
                    .bind(fetch_limit(page))
                    .bind(name)
                    .fetch_all(pool)
                    .await?;
                let mut data = Vec::with_capacity(rows.len());
                for row in &rows {
                    data.push(decode_container!(row));
                }
                Ok(page_of(data, page.limit))
            })
        })
    }

    fn touch_container<'a>(
        &'a self,
        id: &'a str,
        last_active_at: i64,
        claim_expires_at: i64,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            on_pool!(self, |pool| {
                let done = sqlx::query(
                    "UPDATE containers SET \
                     last_active_at = CASE WHEN last_active_at < $2 THEN $2 ELSE last_active_at END, \
                     claim_expires_at = $3 WHERE id = $1 AND status = 'running'",
                )
                .bind(id)
                .bind(last_active_at)
                .bind(claim_expires_at)
                .execute(pool)
                .await?;
                Ok(done.rows_affected() > 0)
            })
        })
    }

    fn idle_containers(
        &self,
        now: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredContainer>>> {
        Box::pin(async move {
            let text = format!(
                "SELECT {CONTAINER_COLUMNS} FROM containers WHERE status = 'running' AND last_active_at + idle_ms <= $1 \
                 ORDER BY last_active_at LIMIT $2"
            );
            on_pool!(self, |pool| {
                let rows =
                    sqlx::query(sql(text)).bind(now).bind(limit as i64).fetch_all(pool).await?;
                let mut data = Vec::with_capacity(rows.len());
                for row in &rows {
                    data.push(decode_container!(row));
                }
                Ok(data)
            })
        })
    }

    fn expire_container<'a>(&'a self, id: &'a str, now: i64) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            on_pool!(self, |pool| {
                let done = sqlx::query(
                    "UPDATE containers SET status = 'expired' \
                     WHERE id = $1 AND status = 'running' AND last_active_at + idle_ms <= $2",
                )
                .bind(id)
                .bind(now)
                .execute(pool)
                .await?;
                Ok(done.rows_affected() > 0)
            })
        })
    }

    fn delete_container<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            on_pool!(self, |pool| {
                // The file rows go with it (ON DELETE CASCADE).
                let done = sqlx::query(
                    "DELETE FROM containers WHERE id = $1 AND tenant = $2 AND ($3 IS NULL OR owner = $3)",
                )
                .bind(id)
                .bind(&access.tenant)
                .bind(&access.user)
                .execute(pool)
                .await?;
                Ok(done.rows_affected() > 0)
            })
        })
    }

    fn put_container_file<'a>(
        &'a self,
        file: &'a StoredContainerFile,
    ) -> BoxFuture<'a, Result<StoredContainerFile>> {
        Box::pin(async move {
            let text = format!(
                "INSERT INTO container_files (id, container_id, tenant, owner, path, bytes, created_at, source) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (id) DO UPDATE SET bytes = excluded.bytes, source = excluded.source \
                 RETURNING {CONTAINER_FILE_COLUMNS}"
            );
            on_pool!(self, |pool| {
                let row = sqlx::query(sql(text))
                    .bind(&file.id)
                    .bind(&file.container_id)
                    .bind(&file.owner.tenant)
                    .bind(&file.owner.user)
                    .bind(&file.path)
                    .bind(file.bytes)
                    .bind(file.created_at)
                    .bind(&file.source)
                    .fetch_one(pool)
                    .await?;
                Ok(decode_container_file!(&row))
            })
        })
    }

    fn list_container_files<'a>(
        &'a self,
        access: &'a Access,
        container_id: &'a str,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<ListPage<StoredContainerFile>>> {
        Box::pin(async move {
            let (low, high) = bounds(page);
            let text = format!(
                "SELECT {CONTAINER_FILE_COLUMNS} FROM container_files WHERE container_id = $1 AND tenant = $2 AND ($3 IS NULL OR owner = $3) \
                 AND ($4 IS NULL OR seq > (SELECT seq FROM container_files WHERE container_id = $1 AND id = $4)) \
                 AND ($5 IS NULL OR seq < (SELECT seq FROM container_files WHERE container_id = $1 AND id = $5)) \
                 ORDER BY seq {} LIMIT $6",
                direction(page.order)
            );
            on_pool!(self, |pool| {
                let rows = sqlx::query(sql(text))
                    .bind(container_id)
                    .bind(&access.tenant)
                    .bind(&access.user)
                    .bind(low)
                    .bind(high)
                    .bind(fetch_limit(page))
                    .fetch_all(pool)
                    .await?;
                let mut data = Vec::with_capacity(rows.len());
                for row in &rows {
                    data.push(decode_container_file!(row));
                }
                Ok(page_of(data, page.limit))
            })
        })
    }

    fn get_container_file<'a>(
        &'a self,
        access: &'a Access,
        container_id: &'a str,
        file_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredContainerFile>>> {
        Box::pin(async move {
            let text = format!(
                "SELECT {CONTAINER_FILE_COLUMNS} FROM container_files \
                 WHERE container_id = $1 AND id = $2 AND tenant = $3 AND ($4 IS NULL OR owner = $4)"
            );
            on_pool!(self, |pool| {
                let row = sqlx::query(sql(text))
                    .bind(container_id)
                    .bind(file_id)
                    .bind(&access.tenant)
                    .bind(&access.user)
                    .fetch_optional(pool)
                    .await?;
                match row {
                    Some(row) => Ok(Some(decode_container_file!(&row))),
                    None => Ok(None),
                }
            })
        })
    }

    fn delete_container_file<'a>(
        &'a self,
        access: &'a Access,
        container_id: &'a str,
        file_id: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            on_pool!(self, |pool| {
                let done = sqlx::query(
                    "DELETE FROM container_files WHERE container_id = $1 AND id = $2 AND tenant = $3 AND ($4 IS NULL OR owner = $4)",
                )
                .bind(container_id)
                .bind(file_id)
                .bind(&access.tenant)
                .bind(&access.user)
                .execute(pool)
                .await?;
                Ok(done.rows_affected() > 0)
            })
        })
    }
}

fn decode_conversation(
    id: String,
    tenant: String,
    owner: String,
    created_at: i64,
    metadata: &str,
) -> Result<Conversation> {
    let metadata = match parse_json(metadata)? {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    Ok(Conversation { id, owner: Owner { tenant, user: owner }, created_at, metadata })
}
