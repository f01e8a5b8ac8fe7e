//! The 2021 reply encoding: how a Redis reply reaches a worker's JS, in one of two shapes.
//!
//! - plain, for the typed methods: integers as numbers, simple and bulk strings as strings
//!   (bytes that are not UTF-8 replaced), nil as `undefined`, arrays as arrays;
//! - tagged, for reply objects (`executor.exec`, `sendCommand`, `flush`): each reply is
//!   `[tag, value]` with the RESP type as tag (`+ $ : * - _`), bulk strings that are not UTF-8
//!   as `Uint8Array`, and errors in place rather than thrown.
//!
//! RESP3 maps and sets come out as RESP2 sends them (flat arrays). A reply is first shaped
//! into a [`Js`] value, a pure step that any reply survives, then built in V8.

use deno_core::convert::Uint8Array;
use deno_core::{v8, ToV8};
use deno_error::JsErrorBox;
use redis::Value;

/// A Redis error reply as deno-redis v0.21–v0.25 puts it in `err.message`: the raw line, with
/// its leading `-` and trailing CRLF.
pub fn error_message(code: &str, detail: Option<&str>) -> String {
    match detail {
        Some(detail) => format!("-{code} {detail}\r\n"),
        None => format!("-{code}\r\n"),
    }
}

/// A reply as JS will see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Js {
    Undefined,
    Number(f64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
    Array(Vec<Js>),
}

/// A reply on its way to JS, in the shape its caller asked for.
pub struct Reply {
    pub value: Value,
    pub tagged: bool,
}

impl Reply {
    pub fn shape(self) -> Js {
        if self.tagged {
            tagged(self.value)
        } else {
            plain(self.value)
        }
    }
}

impl<'a> ToV8<'a> for Reply {
    type Error = JsErrorBox;

    fn to_v8<'i>(self, scope: &mut v8::PinScope<'a, 'i>) -> Result<v8::Local<'a, v8::Value>, Self::Error> {
        build(scope, self.shape())
    }
}

fn build<'a>(scope: &mut v8::PinScope<'a, '_>, js: Js) -> Result<v8::Local<'a, v8::Value>, JsErrorBox> {
    Ok(match js {
        Js::Undefined => v8::undefined(scope).into(),
        Js::Number(n) => v8::Number::new(scope, n).into(),
        Js::Bool(b) => v8::Boolean::new(scope, b).into(),
        Js::Text(text) => v8::String::new_from_utf8(scope, text.as_bytes(), v8::NewStringType::Normal)
            .ok_or_else(|| JsErrorBox::range_error("reply string too long for V8"))?
            .into(),
        Js::Bytes(bytes) => return Uint8Array::from(bytes).to_v8(scope),
        Js::Array(items) => {
            let elements = items.into_iter().map(|item| build(scope, item)).collect::<Result<Vec<_>, _>>()?;
            v8::Array::new_with_elements(scope, &elements).into()
        }
    })
}

/// A bulk string: text when it is UTF-8, else its bytes (`lossy`: as text anyway).
fn bulk(bytes: Vec<u8>, lossy: bool) -> Js {
    match String::from_utf8(bytes) {
        Ok(text) => Js::Text(text),
        Err(e) if lossy => Js::Text(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        Err(e) => Js::Bytes(e.into_bytes()),
    }
}

fn flatten(pairs: Vec<(Value, Value)>) -> Vec<Value> {
    pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()
}

/// An error reply inside an array: `["-", message]`, in either shape.
fn error(e: redis::ServerError) -> Js {
    Js::Array(vec![Js::Text("-".into()), Js::Text(error_message(e.code(), e.details()))])
}

pub fn plain(value: Value) -> Js {
    let array = |items: Vec<Value>| Js::Array(items.into_iter().map(plain).collect());
    match value {
        Value::Nil => Js::Undefined,
        Value::Int(i) => Js::Number(i as f64),
        Value::BulkString(bytes) => bulk(bytes, true),
        Value::SimpleString(s) => Js::Text(s),
        Value::Okay => Js::Text("OK".into()),
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => array(items),
        Value::Map(pairs) => array(flatten(pairs)),
        Value::Attribute { data, .. } => plain(*data),
        Value::Double(d) => Js::Number(d),
        Value::Boolean(b) => Js::Bool(b),
        Value::VerbatimString { text, .. } => Js::Text(text),
        Value::ServerError(e) => error(e),
        other => Js::Text(format!("{other:?}")),
    }
}

pub fn tagged(value: Value) -> Js {
    let array = |items: Vec<Value>| Js::Array(items.into_iter().map(tagged).collect());
    let (tag, js) = match value {
        Value::Nil => ("_", Js::Undefined),
        Value::Int(i) => (":", Js::Number(i as f64)),
        Value::BulkString(bytes) => ("$", bulk(bytes, false)),
        Value::SimpleString(s) => ("+", Js::Text(s)),
        Value::Okay => ("+", Js::Text("OK".into())),
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => ("*", array(items)),
        Value::Map(pairs) => ("*", array(flatten(pairs))),
        Value::Attribute { data, .. } => return tagged(*data),
        Value::ServerError(e) => return error(e),
        Value::Double(d) => ("$", Js::Text(d.to_string())),
        Value::Boolean(b) => (":", Js::Number(f64::from(u8::from(b)))),
        Value::VerbatimString { text, .. } => ("$", Js::Text(text)),
        other => ("$", Js::Text(format!("{other:?}"))),
    };
    Js::Array(vec![Js::Text(tag.into()), js])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An error reply as the server sends it (the crate has no other way to make one).
    fn server_error(code: &str, detail: Option<&str>) -> Value {
        let line = match detail {
            Some(detail) => format!("-{code} {detail}\r\n"),
            None => format!("-{code}\r\n"),
        };
        redis::parse_redis_value(line.as_bytes()).unwrap()
    }

    fn text(s: &str) -> Js {
        Js::Text(s.into())
    }

    #[test]
    fn each_shape_as_deno_redis_gave_it() {
        let reply = Value::Array(vec![
            Value::Int(3),
            Value::BulkString(b"caf\xc3\xa9".to_vec()),
            Value::BulkString(vec![0xff, 0x00]),
            Value::Nil,
            Value::Okay,
        ]);
        assert_eq!(
            plain(reply.clone()),
            Js::Array(vec![Js::Number(3.0), text("café"), text("\u{fffd}\0"), Js::Undefined, text("OK")])
        );
        let pair = |tag: &str, js: Js| Js::Array(vec![text(tag), js]);
        assert_eq!(
            tagged(reply),
            pair(
                "*",
                Js::Array(vec![
                    pair(":", Js::Number(3.0)),
                    pair("$", text("café")),
                    pair("$", Js::Bytes(vec![0xff, 0x00])),
                    pair("_", Js::Undefined),
                    pair("+", text("OK")),
                ])
            )
        );
        let err = server_error("WRONGTYPE", Some("Operation against a key"));
        assert_eq!(tagged(err), pair("-", text("-WRONGTYPE Operation against a key\r\n")));
        let map = Value::Map(vec![(Value::SimpleString("a".into()), Value::Int(1))]);
        assert_eq!(plain(map), Js::Array(vec![text("a"), Js::Number(1.0)]));
    }

    /// Any reply a server can send, nested a few levels.
    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            Just(Value::Okay),
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::BulkString),
            ".{0,20}".prop_map(Value::SimpleString),
            any::<f64>().prop_map(Value::Double),
            any::<bool>().prop_map(Value::Boolean),
            ("[A-Z]{1,12}", proptest::option::of("[ -~]{1,20}"))
                .prop_map(|(code, detail)| server_error(&code, detail.as_deref())),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Set),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
            ]
        })
    }

    /// Whether `js` is a tagged reply all the way down.
    fn well_tagged(js: &Js) -> bool {
        let Js::Array(pair) = js else { return false };
        match pair.as_slice() {
            [Js::Text(tag), Js::Array(items)] if tag == "*" => items.iter().all(well_tagged),
            [Js::Text(tag), Js::Text(message)] if tag == "-" => message.starts_with('-') && message.ends_with("\r\n"),
            [Js::Text(tag), value] => matches!(
                (tag.as_str(), value),
                ("_", Js::Undefined) | (":", Js::Number(_)) | ("+", Js::Text(_)) | ("$", Js::Text(_) | Js::Bytes(_))
            ),
            _ => false,
        }
    }

    fn no_bytes(js: &Js) -> bool {
        match js {
            Js::Bytes(_) => false,
            Js::Array(items) => items.iter().all(no_bytes),
            _ => true,
        }
    }

    proptest! {
        #[test]
        fn any_reply_has_a_tagged_shape(value in any_value()) {
            prop_assert!(well_tagged(&tagged(value.clone())), "{:?}", tagged(value));
        }

        #[test]
        fn a_plain_reply_is_never_bytes(value in any_value()) {
            prop_assert!(no_bytes(&plain(value)));
        }

        #[test]
        fn bulk_bytes_come_back_exactly(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let js = tagged(Value::BulkString(bytes.clone()));
            let Js::Array(pair) = js else { panic!("not a pair") };
            let back = match &pair[1] {
                Js::Text(text) => text.as_bytes().to_vec(),
                Js::Bytes(b) => b.clone(),
                other => panic!("{other:?}"),
            };
            prop_assert_eq!(back, bytes);
        }
    }
}
