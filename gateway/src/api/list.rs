//! OpenAI's list conventions, shared by every list endpoint: the query (`limit` 1..=100,
//! default 20; `after`, `before`: object ids; `order`: `asc` or `desc`, default `desc`) and the
//! body `{object: "list", data, first_id, last_id, has_more}`.

use serde_json::{Value, json};

use crate::error::Error;
use crate::store::{Order, Page};

pub const MAX_LIMIT: usize = 100;

/// Whether a query string names `value` in `include` (`include=v`, `include[]=v`, repeated).
pub fn includes(query: Option<&str>, value: &str) -> bool {
    query.unwrap_or("").split('&').any(|pair| {
        let (key, v) = pair.split_once('=').unwrap_or((pair, ""));
        matches!(key, "include" | "include[]" | "include%5B%5D" | "include%5b%5d") && v == value
    })
}

/// The (decoded) value of query parameter `key`, if given.
pub fn param(query: Option<&str>, key: &str) -> Option<String> {
    query.unwrap_or("").split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| decode(v))
    })
}

/// Parses a list query string; unknown parameters (e.g. `include`) are ignored.
pub fn page(query: Option<&str>) -> Result<Page, Error> {
    let mut page = Page::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value);
        match key {
            "limit" => {
                page.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        Error::invalid_value(
                            "limit",
                            format!(
                                "'limit' must be an integer from 1 to {MAX_LIMIT}, got '{value}'."
                            ),
                        )
                    })?
            }
            "after" | "before" => {
                if value.is_empty() {
                    return Err(Error::invalid_value(
                        key,
                        format!("'{key}' must be an object id."),
                    ));
                }
                if key == "after" {
                    page.after = Some(value);
                } else {
                    page.before = Some(value);
                }
            }
            "order" => {
                page.order = match value.as_str() {
                    "asc" => Order::Asc,
                    "desc" => Order::Desc,
                    _ => {
                        return Err(Error::invalid_value(
                            "order",
                            format!("'order' must be 'asc' or 'desc', got '{value}'."),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(page)
}

/// The list body for one page of objects (each with an `id`).
pub fn body(data: Vec<Value>, has_more: bool) -> Value {
    let id = |v: Option<&Value>| v.and_then(|v| v.get("id")).cloned().unwrap_or(Value::Null);
    json!({
        "object": "list",
        "first_id": id(data.first()),
        "last_id": id(data.last()),
        "has_more": has_more,
        "data": data,
    })
}

/// Percent-decoding of a query value (`+` is a space).
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_defaults_and_errors() {
        assert_eq!(page(None).expect("empty"), Page::default());
        let p = page(Some("limit=5&order=asc&after=resp_1&include=x")).expect("valid");
        assert_eq!((p.limit, p.order, p.after.as_deref()), (5, Order::Asc, Some("resp_1")));
        for bad in ["limit=0", "limit=101", "limit=x", "order=up", "after="] {
            let err = page(Some(bad)).expect_err(bad);
            assert_eq!(err.status(), 400, "{bad}");
        }
        assert_eq!(decode("a%20b+c"), "a b c");
    }
}
