//! Reads of the environment read model for the query API.

use crate::environment_view::EnvironmentView;
use crate::store::{COLUMNS, ViewTable, view_from_row};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use domain::aggregate::Status;
use domain::ids::EnvironmentId;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// `GET /v1/environments` parameters. Deserializes from the query string (`?status=&name=&
/// limit=&cursor=`), missing fields taking their defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only environments with this status word.
    #[param(value_type = Option<domain::aggregate::Status>)]
    pub status: Option<String>,
    /// Only environments with exactly this name (an environment name: 1-40 characters of
    /// `a-z`, `0-9` and `-`, starting with a letter, not ending with `-`).
    #[param(pattern = "^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$", max_length = 40)]
    pub name: Option<String>,
    /// Page size, `1..=200`.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: u32,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListQuery {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 200;
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            status: None,
            name: None,
            limit: Self::DEFAULT_LIMIT,
            cursor: None,
        }
    }
}

/// One page of environments, oldest first. `next_cursor` is `None` on the last page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page {
    pub items: Vec<EnvironmentView>,
    pub next_cursor: Option<String>,
}

/// One environment, or `None` if the read model does not have it (yet).
pub async fn get(pool: &PgPool, id: &str) -> Result<Option<EnvironmentView>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE id = $1",
        ViewTable::live().sql()
    );
    let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
    Ok(row.as_ref().map(view_from_row).transpose()?)
}

/// A page of environments ordered by (created_at, id), after the query's cursor; only `tenant`'s
/// when one is given (`None`: every tenant's, for an admin).
///
/// Errors: [`Error::InvalidCursor`], [`Error::InvalidLimit`], [`Error::InvalidStatus`],
/// [`Error::InvalidName`] for bad input (400), [`Error::Database`] otherwise.
pub async fn list(pool: &PgPool, query: &ListQuery, tenant: Option<&str>) -> Result<Page> {
    if !(1..=ListQuery::MAX_LIMIT).contains(&query.limit) {
        return Err(Error::InvalidLimit { limit: query.limit });
    }
    if let Some(status) = &query.status
        && Status::parse(status).is_none()
    {
        return Err(Error::InvalidStatus(status.clone()));
    }
    if let Some(name) = &query.name
        && let Err(reason) = domain::config::environment_name(name)
    {
        return Err(Error::InvalidName {
            name: name.clone(),
            reason,
        });
    }
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;

    let mut conditions = Vec::new();
    let mut next_param = 1;
    let mut param = || {
        let n = next_param;
        next_param += 1;
        format!("${n}")
    };
    if tenant.is_some() {
        conditions.push(format!("tenant = {}", param()));
    }
    if query.status.is_some() {
        conditions.push(format!("status = {}", param()));
    }
    if query.name.is_some() {
        conditions.push(format!("name = {}", param()));
    }
    if after.is_some() {
        let (at, id) = (param(), param());
        conditions.push(format!("(created_at, id) > ({at}, {id})"));
    }
    let limit = param();
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM {} {filter} ORDER BY created_at, id LIMIT {limit}",
        ViewTable::live().sql()
    );

    let mut statement = sqlx::query(&sql);
    if let Some(tenant) = tenant {
        statement = statement.bind(tenant);
    }
    if let Some(status) = &query.status {
        statement = statement.bind(status);
    }
    if let Some(name) = &query.name {
        statement = statement.bind(name);
    }
    if let Some((at, id)) = &after {
        statement = statement.bind(at).bind(id);
    }
    let page_size = query.limit as usize;
    let rows = statement
        .bind(i64::from(query.limit) + 1)
        .fetch_all(pool)
        .await?;

    let mut items = rows
        .iter()
        .map(view_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > page_size {
        items.truncate(page_size);
        items
            .last()
            .map(|last| encode_cursor(last.created_at, &last.id))
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// The opaque cursor after `(created_at, id)`: hex of `<created_at micros>:<id>`.
fn encode_cursor(created_at: DateTime<Utc>, id: &str) -> String {
    let plain = format!("{}:{id}", created_at.timestamp_micros());
    plain.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The latest time a cursor may name: 9999-12-31T23:59:59.999999Z, in microseconds.
const MAX_CURSOR_MICROS: i64 = 253_402_300_799_999_999;

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, String)> {
    if cursor.is_empty() || !cursor.len().is_multiple_of(2) || cursor.len() > 512 {
        return Err(Error::InvalidCursor);
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| {
            cursor
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or(Error::InvalidCursor)?;
    let plain = String::from_utf8(bytes).map_err(|_| Error::InvalidCursor)?;
    let (micros, id) = plain.split_once(':').ok_or(Error::InvalidCursor)?;
    let micros: i64 = micros.parse().map_err(|_| Error::InvalidCursor)?;
    // Only a time the API could have put there (a row's `created_at`, 1970 to 9999): the
    // cursor's parts are bound as query parameters, and Postgres refuses a time outside its own
    // range, which would answer 500.
    if !(0..=MAX_CURSOR_MICROS).contains(&micros) {
        return Err(Error::InvalidCursor);
    }
    let at = DateTime::from_timestamp_micros(micros).ok_or(Error::InvalidCursor)?;
    // Likewise only an id: Postgres refuses text with a NUL in it.
    let id = EnvironmentId::parse(id).map_err(|_| Error::InvalidCursor)?;
    Ok((at, id.as_str().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let at = DateTime::from_timestamp_micros(1_732_000_000_123_456).unwrap();
        let cursor = encode_cursor(at, "env_01jd0000000000000000000000");
        assert!(cursor.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            decode_cursor(&cursor).unwrap(),
            (at, "env_01jd0000000000000000000000".to_owned())
        );
    }

    #[test]
    fn garbage_cursors_are_invalid() {
        let no_colon: String = "12345".bytes().map(|b| format!("{b:02x}")).collect();
        let no_id: String = "12345:".bytes().map(|b| format!("{b:02x}")).collect();
        let not_a_number: String = "abc:env_x".bytes().map(|b| format!("{b:02x}")).collect();
        for bad in [
            "",
            "abc",
            "zz",
            "not a cursor",
            "é1",
            "ff",
            &no_colon,
            &no_id,
            &not_a_number,
        ] {
            assert!(
                matches!(decode_cursor(bad), Err(Error::InvalidCursor)),
                "{bad:?} was accepted"
            );
        }
    }

    /// Found by `command-api/tests/http_properties.rs`: these decoded, and Postgres refused the
    /// query (a 500).
    #[test]
    fn cursors_the_api_cannot_have_made_are_invalid() {
        let hex = |plain: &str| {
            plain
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let id = "env_01jd0000000000000000000000";
        for plain in [
            "0:\0".to_owned(),
            format!("0:{id}\0"),
            "0:not-an-id".to_owned(),
            format!("-210866803200000001:{id}"),
            format!("-1:{id}"),
            format!("{}:{id}", MAX_CURSOR_MICROS + 1),
        ] {
            assert!(
                matches!(decode_cursor(&hex(&plain)), Err(Error::InvalidCursor)),
                "{plain:?} was accepted"
            );
        }
        let latest = format!("{MAX_CURSOR_MICROS}:{id}");
        let at = DateTime::from_timestamp_micros(MAX_CURSOR_MICROS).unwrap();
        assert_eq!(decode_cursor(&hex(&latest)).unwrap(), (at, id.to_owned()));
        assert_eq!(at.to_rfc3339(), "9999-12-31T23:59:59.999999+00:00");
    }

    #[test]
    fn list_query_defaults_to_fifty() {
        let query: ListQuery = serde_json::from_str("{}").unwrap();
        assert_eq!(query, ListQuery::default());
        assert_eq!(query.limit, 50);
    }
}
