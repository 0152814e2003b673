//! A JSON document with its object keys sorted, borrowing its strings from the text it was read
//! from: what the audit chain hashes and summarises, without building a `serde_json::Value`.
//!
//! Why not `Value`: the chain covers serde_json's serialisation of a `Value` (sorted keys, its
//! number and string formats), and a rebuild computes it for every event. Building a `Value`
//! allocates every key and string and a B-tree per object, and that was a quarter of an audit
//! rebuild's CPU. This tree allocates only a vector per object and array, and a string only where
//! the text escapes it. Why not a crate: the canonical JSON crates (RFC 8785 and the like) format
//! numbers and escapes their own way, and every stored chain is over serde_json's bytes. The
//! property test below holds this serialisation to `Value`'s byte for byte.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Number;

/// A JSON value; an object's members are sorted by key (bytewise, as `Value`'s map) and unique
/// (the last of a repeated key wins, as in `Value`).
#[derive(Debug, Clone, PartialEq)]
pub enum SortedJson<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<SortedJson<'a>>),
    Object(Vec<(Cow<'a, str>, SortedJson<'a>)>),
}

impl<'a> SortedJson<'a> {
    /// Reads JSON text.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// An object's member.
    pub fn get(&self, key: &str) -> Option<&SortedJson<'a>> {
        match self {
            SortedJson::Object(members) => members
                .binary_search_by(|(k, _)| k.as_ref().cmp(key))
                .ok()
                .map(|i| &members[i].1),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            SortedJson::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            SortedJson::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[SortedJson<'a>]> {
        match self {
            SortedJson::Array(items) => Some(items),
            _ => None,
        }
    }
}

impl Serialize for SortedJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SortedJson::Null => serializer.serialize_unit(),
            SortedJson::Bool(b) => serializer.serialize_bool(*b),
            SortedJson::Number(n) => n.serialize(serializer),
            SortedJson::String(s) => serializer.serialize_str(s),
            SortedJson::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            SortedJson::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for SortedJson<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = SortedJson<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(SortedJson::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(SortedJson::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(SortedJson::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        // As `Value`: a float JSON cannot hold is null.
        Ok(Number::from_f64(n).map_or(SortedJson::Null, SortedJson::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(SortedJson::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(SortedJson::String(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(SortedJson::String(Cow::Owned(s)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(SortedJson::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(SortedJson::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Deserialize::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(SortedJson::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Vec<(Cow<'de, str>, SortedJson<'de>)> =
            Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            members.push((key.0, map.next_value()?));
        }
        // Stable: of a repeated key, the last read stays last, and is the one kept.
        members.sort_by(|(a, _), (b, _)| a.cmp(b));
        let mut unique: Vec<(Cow<'de, str>, SortedJson<'de>)> = Vec::with_capacity(members.len());
        for member in members {
            match unique.last_mut() {
                Some(last) if last.0 == member.0 => *last = member,
                _ => unique.push(member),
            }
        }
        Ok(SortedJson::Object(unique))
    }
}

/// An object key, borrowed when the text does not escape it (serde's own `Cow<str>` always
/// copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn same_as_value(text: &str) {
        let value: Value = serde_json::from_str(text).unwrap();
        let sorted = SortedJson::parse(text).unwrap();
        assert_eq!(
            serde_json::to_string(&sorted).unwrap(),
            serde_json::to_string(&value).unwrap(),
            "{text}"
        );
    }

    #[test]
    fn serialises_as_a_value_does() {
        for text in [
            r#"{"b":1,"a":{"d":[1,-2,2.5,1e300,18446744073709551615,-9223372036854775808],"c":null}}"#,
            r#"{"k":"x","k":"y","a\u00e9":"\u00e9\n\"\\\/\u0001","é":true}"#,
            r#"[{"z":{},"y":[]},"",0.1,1.0,-0.0,123456789012345678901234567890]"#,
            r#""just a string""#,
            "3",
        ] {
            same_as_value(text);
        }
    }

    #[test]
    fn finds_members_of_the_sorted_object() {
        let doc = SortedJson::parse(r#"{"b":{"n":7},"a":"x","c":[1,2]}"#).unwrap();
        assert_eq!(doc.get("a").and_then(SortedJson::as_str), Some("x"));
        assert_eq!(
            doc.get("b")
                .and_then(|b| b.get("n"))
                .and_then(SortedJson::as_u64),
            Some(7)
        );
        assert_eq!(
            doc.get("c").and_then(SortedJson::as_array).map(<[_]>::len),
            Some(2)
        );
        assert_eq!(doc.get("d"), None);
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((".{0,6}", inner), 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any document, with its members in any order and repeated keys, serialises to the
        /// bytes a `Value` read from the same text does.
        #[test]
        fn any_document_serialises_as_a_value_does(
            doc in json(),
            repeat in prop::collection::vec((".{0,3}", any::<i32>()), 0..4),
        ) {
            let text = serde_json::to_string(&doc).unwrap();
            same_as_value(&text);
            // Members written in reverse order, with repeated keys appended.
            if let Value::Object(members) = &doc {
                let mut parts: Vec<String> = members
                    .iter()
                    .rev()
                    .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v))
                    .collect();
                parts.extend(repeat.iter().map(|(k, n)| format!("{}:{n}", Value::from(k.as_str()))));
                same_as_value(&format!("{{{}}}", parts.join(",")));
            }
        }
    }
}
