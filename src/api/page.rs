//! Pagination as ECS clients expect it: `maxResults` 1-100, an opaque
//! `nextToken` that resumes after the last item returned.

use super::error::{ApiError, ApiResult};

/// The page size asked for, checked.
pub fn max_results(req: &serde_json::Value, default: usize) -> ApiResult<usize> {
    match req.get("maxResults") {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(v) => match v.as_i64() {
            Some(n) if (1..=100).contains(&n) => Ok(n as usize),
            _ => Err(ApiError::invalid(format!(
                "maxResults must be between 1 and 100, got {v}"
            ))),
        },
    }
}

/// Encodes the position after `last` as a token.
pub fn token(last: &str) -> String {
    last.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a token from the request, if any.
pub fn after(req: &serde_json::Value) -> ApiResult<Option<String>> {
    let Some(t) = req.get("nextToken").and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid("nextToken is not a token this server gave out; start again without it")
    };
    // Decoded byte by byte, never by slicing the string: a token is any
    // string a client sends, multi-byte characters included.
    let t = t.as_bytes();
    if t.len() % 2 != 0 {
        return Err(bad());
    }
    let nibble = |c: u8| (c as char).to_digit(16).ok_or_else(bad);
    let bytes = t
        .chunks_exact(2)
        .map(|pair| Ok((nibble(pair[0])? << 4 | nibble(pair[1])?) as u8))
        .collect::<ApiResult<Vec<u8>>>()?;
    String::from_utf8(bytes).map(Some).map_err(|_| bad())
}

/// One page of `items` (sorted by `key`), and the token for the next.
pub fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    after: Option<&str>,
    max: usize,
) -> (Vec<T>, Option<String>) {
    let start = match after {
        Some(a) => items
            .iter()
            .position(|i| key(i).as_str() > a)
            .unwrap_or(items.len()),
        None => 0,
    };
    let mut rest: Vec<T> = items.into_iter().skip(start).collect();
    let more = rest.len() > max;
    rest.truncate(max);
    let next = if more {
        rest.last().map(|l| token(&key(l)))
    } else {
        None
    };
    (rest, next)
}

/// One page of `items` by position, for an order the request chooses
/// (not a key's): the token is the position to resume at.
pub fn by_position<'a, T>(
    items: &'a [T],
    req: &serde_json::Value,
    max: usize,
) -> ApiResult<(&'a [T], Option<String>)> {
    let start: usize = match after(req)? {
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::invalid("The specified nextToken is invalid."))?,
        None => 0,
    };
    let end = start.saturating_add(max).min(items.len());
    let next = (end < items.len()).then(|| token(&end.to_string()));
    Ok((items.get(start..end).unwrap_or_default(), next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_resume_after_the_token() {
        let items: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
        let (p1, t1) = page(items.clone(), |s| s.clone(), None, 2);
        assert_eq!(p1, ["k0", "k1"]);
        let req = serde_json::json!({"nextToken": t1.unwrap()});
        let a = after(&req).unwrap();
        let (p2, _) = page(items.clone(), |s| s.clone(), a.as_deref(), 2);
        assert_eq!(p2, ["k2", "k3"]);
        let (p3, t3) = page(items, |s| s.clone(), Some("k3"), 2);
        assert_eq!((p3.len(), t3), (1, None));
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(max_results(&serde_json::json!({"maxResults": 0}), 100).is_err());
        assert!(max_results(&serde_json::json!({"maxResults": 101}), 100).is_err());
        assert_eq!(max_results(&serde_json::json!({}), 100).unwrap(), 100);
        assert!(after(&serde_json::json!({"nextToken": "zz"})).is_err());
        // Multi-byte characters, at even and odd byte offsets.
        for t in [
            "a\u{e9}a",
            "\u{e9}",
            "\u{1f600}",
            "0\u{e9}",
            "aa\u{1f600}bb",
            "+1",
        ] {
            assert!(
                after(&serde_json::json!({ "nextToken": t })).is_err(),
                "{t}"
            );
        }
        let t = token("caf\u{e9}");
        assert_eq!(
            after(&serde_json::json!({ "nextToken": t }))
                .unwrap()
                .as_deref(),
            Some("caf\u{e9}")
        );
    }
}
