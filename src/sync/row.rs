//! One stream entry as one row: which value goes in which column of the table's [`Plan`].
//! Pure functions, so that every rule of the mapping is a unit test.

use std::borrow::Cow;

use serde_json::Value;

use super::table::{Plan, Source};

/// A stream entry as XREADGROUP gave it: its id and its fields (names and values as bytes),
/// in Redis's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why an entry cannot become a row before PostgreSQL sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfit {
    #[error("field '{0}' is not UTF-8 text")]
    NotUtf8(String),
    #[error("a field name is not UTF-8 text ('{0}')")]
    NameNotUtf8(String),
}

/// The row's values, one per column of the plan, as text (`None` is NULL), borrowed from the
/// entry where they can be; PostgreSQL converts each to its column's type.
pub fn values<'a>(plan: &Plan, stream: &'a str, entry: &'a Entry) -> Result<Vec<Option<Cow<'a, str>>>, Unfit> {
    let mut fields: Vec<(&str, &str)> = Vec::with_capacity(entry.fields.len());
    for (name, value) in &entry.fields {
        let name = std::str::from_utf8(name).map_err(|_| Unfit::NameNotUtf8(String::from_utf8_lossy(name).into()))?;
        let text = std::str::from_utf8(value).map_err(|_| Unfit::NotUtf8(name.to_string()))?;
        fields.push((name, text));
    }
    // A field named twice: the last one counts, as in a JSON object.
    let field = |name: &str| fields.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let time = plan.has(Source::Time).then(|| field("time").and_then(parse_time)).flatten();
    let mut row = Vec::with_capacity(plan.columns.len());
    for column in &plan.columns {
        row.push(match &column.source {
            Source::Stream => Some(Cow::Borrowed(stream)),
            Source::Id => Some(Cow::Borrowed(entry.id.as_str())),
            Source::Time => time.clone().map(Cow::Owned),
            Source::Data => field("data").map(|data| match column.json {
                true => as_json(data),
                false => Cow::Borrowed(data),
            }),
            Source::Fields => Some(Cow::Owned(rest(plan, &fields, time.is_some()))),
            Source::Field(name) => field(name).map(Cow::Borrowed),
        });
    }
    Ok(row)
}

/// The fields no other column takes, as a JSON object of strings (a `time` that did not parse
/// stays here, so that nothing of the entry is lost).
fn rest(plan: &Plan, fields: &[(&str, &str)], time_parsed: bool) -> String {
    let mut json = String::with_capacity(64);
    json.push('{');
    for (name, value) in fields {
        let taken = match *name {
            "time" => time_parsed,
            name => plan.takes_field(name),
        };
        if !taken {
            if json.len() > 1 {
                json.push(',');
            }
            push_json_string(&mut json, name);
            json.push(':');
            push_json_string(&mut json, value);
        }
    }
    json.push('}');
    json
}

/// Appends `text` as a JSON string: as it is between quotes when nothing in it needs escaping.
fn push_json_string(json: &mut String, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        json.push('"');
        json.push_str(text);
        json.push('"');
    } else {
        json.push_str(&serde_json::to_string(text).expect("a string serializes"));
    }
}

/// `data` as JSON: itself when it parses, else a JSON string holding it.
fn as_json(data: &str) -> Cow<'_, str> {
    match serde_json::from_str::<serde::de::IgnoredAny>(data) {
        Ok(_) => Cow::Borrowed(data),
        Err(_) => Cow::Owned(Value::String(data.to_string()).to_string()),
    }
}

/// A `time` field as an ISO 8601 timestamp PostgreSQL reads: milliseconds since the epoch
/// (as `Date.now()` writes them) or an RFC 3339 date; anything else is no time.
pub fn parse_time(time: &str) -> Option<String> {
    let time = time.trim();
    if !time.is_empty() && time.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = time.parse().ok()?;
        let at = chrono::DateTime::from_timestamp_millis(ms)?;
        return Some(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    }
    chrono::DateTime::parse_from_rfc3339(time).ok().map(|_| time.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any entry (names and values of any bytes) gives a row or a typed refusal.
        #[test]
        fn any_entry_becomes_a_row_or_is_unfit(
            fields in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
                 proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)),
                0..8,
            ),
            named in proptest::collection::vec(("(time|data|ref|x)", "\\PC{0,30}"), 0..6),
        ) {
            let e = Entry { id: "1-0".into(), fields };
            let _ = values(&standard(), "s", &e);
            let named = named.into_iter().map(|(k, v)| (k.into_bytes(), v.into_bytes())).collect();
            let e = Entry { id: "1-0".into(), fields: named };
            let row = values(&standard(), "s", &e);
            proptest::prop_assert!(row.is_ok(), "UTF-8 fields always fit: {row:?}");
        }
    }
    use crate::sync::table::{Column, Plan};

    fn entry(fields: &[(&str, &str)]) -> Entry {
        Entry {
            id: "1700000000000-0".into(),
            fields: fields.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect(),
        }
    }

    fn column(name: &str, source: Source, json: bool) -> Column {
        Column { name: name.into(), source, json, cast: None }
    }

    fn standard() -> Plan {
        Plan {
            columns: vec![
                column("_stream", Source::Stream, false),
                column("_id", Source::Id, false),
                column("_ref", Source::Field("ref".into()), false),
                column("_time", Source::Time, false),
                column("_data", Source::Data, true),
                column("_fields", Source::Fields, true),
            ],
        }
    }

    #[test]
    fn a_2021_request() {
        let e = entry(&[("ref", "r1"), ("time", "2021-10-03T12:00:00.000Z"), ("type", "demo"), ("data", "{\"a\":1}")]);
        let row = values(&standard(), "demo:req:x", &e).unwrap();
        assert_eq!(
            row,
            [
                Some("demo:req:x".into()),
                Some("1700000000000-0".into()),
                Some("r1".into()),
                Some("2021-10-03T12:00:00.000Z".into()),
                Some("{\"a\":1}".into()),
                Some("{\"type\":\"demo\"}".into()),
            ]
        );
    }

    #[test]
    fn data_that_is_not_json_becomes_a_json_string() {
        let e = entry(&[("data", "hello \"you\"")]);
        let row = values(&standard(), "s", &e).unwrap();
        assert_eq!(row[4].as_deref(), Some("\"hello \\\"you\\\"\""));
        let plain = Plan { columns: vec![column("_id", Source::Id, false), column("_data", Source::Data, false)] };
        assert_eq!(values(&plain, "s", &entry(&[("data", "hello")])).unwrap()[1].as_deref(), Some("hello"));
    }

    #[test]
    fn missing_fields_are_null_and_bad_times_stay_in_fields() {
        let e = entry(&[("time", "yesterday")]);
        let row = values(&standard(), "s", &e).unwrap();
        assert_eq!(row[2], None);
        assert_eq!(row[3], None);
        assert_eq!(row[4], None);
        assert_eq!(row[5].as_deref(), Some("{\"time\":\"yesterday\"}"));
        let e = entry(&[("a\"b", "line\nbreak"), ("c", "d")]);
        let quoted = values(&standard(), "s", &e).unwrap();
        assert_eq!(quoted[5].as_deref(), Some("{\"a\\\"b\":\"line\\nbreak\",\"c\":\"d\"}"));
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1633262400000").as_deref(), Some("2021-10-03T12:00:00.000Z"));
        assert_eq!(parse_time("2021-10-03T14:00:00+02:00").as_deref(), Some("2021-10-03T14:00:00+02:00"));
        for bad in ["", "now", "2021-10-03", "99999999999999999999999"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn bytes_that_are_not_text_are_unfit() {
        let e = Entry { id: "1-0".into(), fields: vec![(b"data".to_vec(), vec![0xff, 0xfe])] };
        assert_eq!(values(&standard(), "s", &e), Err(Unfit::NotUtf8("data".into())));
        let e = Entry { id: "1-0".into(), fields: vec![(vec![b'a', 0xff], b"x".to_vec())] };
        assert_eq!(values(&standard(), "s", &e), Err(Unfit::NameNotUtf8("a\u{fffd}".into())));
    }
}
