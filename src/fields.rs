//! A hash's fields, read by one rule. Every worker, type and sync hash is read through
//! [`Fields`]: text is trimmed and an empty field counts as missing; a number is a whole
//! number within its bounds, or an error that names the hash, the field and how to fix it.

use std::collections::HashMap;
use std::ops::RangeInclusive;

/// A field that should hold a number and does not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hash '{key}': {name} '{value}' must be a whole number {bounds}; fix it with redis-cli hset {key} {name} ...")]
pub struct BadNumber {
    pub key: String,
    pub name: String,
    pub value: String,
    bounds: String,
}

/// The fields of hash `key` (for a worker: its own over its type's).
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    key: &'a str,
    hash: &'a HashMap<String, String>,
}

impl<'a> Fields<'a> {
    pub fn new(key: &'a str, hash: &'a HashMap<String, String>) -> Fields<'a> {
        Fields { key, hash }
    }

    /// Field `name`, trimmed; none when missing or empty.
    pub fn text(&self, name: &str) -> Option<&'a str> {
        self.hash.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// Field `name` as a whole number of at least `least`; none when missing or empty.
    pub fn number(&self, name: &str, least: u64) -> Result<Option<u64>, BadNumber> {
        self.number_in(name, least..=u64::MAX)
    }

    /// Field `name` as a whole number in `range`; none when missing or empty.
    pub fn number_in(&self, name: &str, range: RangeInclusive<u64>) -> Result<Option<u64>, BadNumber> {
        let Some(value) = self.text(name) else { return Ok(None) };
        match value.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(BadNumber {
                key: self.key.to_string(),
                name: name.to_string(),
                value: value.to_string(),
                bounds: match *range.end() {
                    u64::MAX => format!("of at least {}", range.start()),
                    most => format!("from {} to {most}", range.start()),
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any text in a hash field gives a number in bounds, none, or a typed error.
        #[test]
        fn any_number_field_is_in_bounds_or_refused(value in "\\PC*", least in 0u64..5, most in 5u64..u64::MAX) {
            let hash: HashMap<String, String> = [("n".to_string(), value)].into();
            let fields = Fields::new("k", &hash);
            if let Ok(Some(n)) = fields.number_in("n", least..=most) {
                proptest::prop_assert!((least..=most).contains(&n));
            }
        }
    }

    #[test]
    fn numbers_follow_one_rule() {
        let hash: HashMap<String, String> =
            [("a", " 7 "), ("zero", "0"), ("empty", ""), ("word", "seven"), ("minus", "-1"), ("big", "2000")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into();
        let fields = Fields::new("t:1:h", &hash);
        assert_eq!(fields.number("a", 1), Ok(Some(7)));
        assert_eq!(fields.number("missing", 1), Ok(None));
        assert_eq!(fields.number("empty", 1), Ok(None));
        assert_eq!(fields.number("zero", 0), Ok(Some(0)));
        let zero = fields.number("zero", 1).unwrap_err().to_string();
        assert_eq!(
            zero,
            "hash 't:1:h': zero '0' must be a whole number of at least 1; fix it with redis-cli hset t:1:h zero ..."
        );
        for bad in ["word", "minus"] {
            assert!(fields.number(bad, 0).is_err(), "{bad}");
        }
        assert!(fields
            .number_in("big", 1..=1024)
            .unwrap_err()
            .to_string()
            .contains("'2000' must be a whole number from 1 to 1024"));
        assert_eq!(fields.text("a"), Some("7"));
        assert_eq!(fields.text("empty"), None);
    }
}
