//! The OpenTelemetry semantic-convention attributes, as the `opentelemetry-semantic-conventions`
//! crate defines them: every name is the crate's own constant (`table.rs` refers to them, so a
//! name the crate drops fails to compile), with what the crate says about it — stable or
//! experimental, deprecated (and by what replaced), the value type its examples show, and the
//! first line of its documentation.
//!
//! `table.rs` is generated from the crate's source (`attribute.rs` in the cargo registry) by
//! the test below, which also fails when the table no longer matches the crate in
//! `Cargo.lock`: `SPANTREE_UPDATE_SEMCONV=1 cargo test -p spantree semconv` rewrites it.

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};

mod table;

#[cfg(test)]
mod generate;

/// The type of an attribute value, as OTLP carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttrType {
    /// `string`
    String,
    /// `int`
    Int,
    /// `double`
    Double,
    /// `boolean`
    Bool,
    /// `string[]`
    StringArray,
    /// `int[]`
    IntArray,
    /// `double[]`
    DoubleArray,
    /// `boolean[]`
    BoolArray,
}

impl AttrType {
    /// Every type, in the order of [`AttrType::name`]'s names.
    pub const ALL: [AttrType; 8] = [
        Self::String,
        Self::Int,
        Self::Double,
        Self::Bool,
        Self::StringArray,
        Self::IntArray,
        Self::DoubleArray,
        Self::BoolArray,
    ];

    /// The name used in the registry and in findings (`string`, `int`, `string[]`, ...).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Int => "int",
            Self::Double => "double",
            Self::Bool => "boolean",
            Self::StringArray => "string[]",
            Self::IntArray => "int[]",
            Self::DoubleArray => "double[]",
            Self::BoolArray => "boolean[]",
        }
    }

    /// The type named `name` (see [`AttrType::name`]).
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The type of an OTLP value; `None` for bytes, key/value lists, empty values and arrays
    /// that mix types.
    #[must_use]
    pub fn of(value: &AnyValue) -> Option<Self> {
        use any_value::Value as V;
        Some(match value.value.as_ref()? {
            V::StringValue(_) => Self::String,
            V::IntValue(_) => Self::Int,
            V::DoubleValue(_) => Self::Double,
            V::BoolValue(_) => Self::Bool,
            V::ArrayValue(a) => {
                let types: Vec<Option<Self>> = a.values.iter().map(Self::of).collect();
                match types.first().copied().flatten() {
                    // An empty array fits any array type; call it string[].
                    None if types.is_empty() => Self::StringArray,
                    Some(first) if types.iter().all(|t| *t == Some(first)) => match first {
                        Self::String => Self::StringArray,
                        Self::Int => Self::IntArray,
                        Self::Double => Self::DoubleArray,
                        Self::Bool => Self::BoolArray,
                        _ => return None,
                    },
                    _ => return None,
                }
            }
            V::KvlistValue(_) | V::BytesValue(_) | V::StringValueStrindex(_) => return None,
        })
    }
}

impl std::fmt::Display for AttrType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One semantic-convention attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    /// Its name (`http.route`), the crate's constant.
    pub name: &'static str,
    /// The type of the crate's examples; `None` when it gives none (enums mostly).
    pub ty: Option<AttrType>,
    /// Stable (not behind the crate's `semconv_experimental` feature).
    pub stable: bool,
    /// The crate's deprecation note (`Replaced by ...`), when deprecated.
    pub deprecated: Option<&'static str>,
    /// The first line of its documentation.
    pub brief: &'static str,
}

/// The attribute named `key`: exactly, or as an instance of a template attribute
/// (`http.request.header.content-type` is one of `http.request.header`, ``key`` being the
/// last part). The bool says whether it matched as a template.
#[must_use]
pub fn lookup(key: &str) -> Option<(&'static Attribute, bool)> {
    if let Some(a) = exact(key) {
        return Some((a, false));
    }
    let mut prefix = key;
    while let Some((head, _)) = prefix.rsplit_once('.') {
        if let Some(a) = exact(head).filter(|a| a.template()) {
            return Some((a, true));
        }
        prefix = head;
    }
    None
}

fn exact(key: &str) -> Option<&'static Attribute> {
    table::ATTRIBUTES
        .binary_search_by(|a| a.name.cmp(key))
        .ok()
        .map(|i| &table::ATTRIBUTES[i])
}

impl Attribute {
    /// Whether the name is a template (`<key>` follows it), per its documentation.
    #[must_use]
    pub fn template(&self) -> bool {
        self.brief.contains("``key``")
    }
}

/// Every attribute, sorted by name.
#[must_use]
pub fn attributes() -> &'static [Attribute] {
    table::ATTRIBUTES
}

/// The schema URL of the conventions the crate defines.
pub const SCHEMA_URL: &str = opentelemetry_semantic_conventions::SCHEMA_URL;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_stable_deprecated_and_template_attributes() {
        let (route, template) = lookup("http.route").unwrap();
        assert!(!template && route.stable && route.deprecated.is_none());
        assert_eq!(route.ty, Some(AttrType::String));
        let (code, _) = lookup("http.response.status_code").unwrap();
        assert_eq!(code.ty, Some(AttrType::Int));
        let (old, _) = lookup("http.method").unwrap();
        assert!(
            old.deprecated.unwrap().contains("http.request.method"),
            "{old:?}"
        );
        let (header, template) = lookup("http.request.header.content-type").unwrap();
        assert!(template, "{header:?}");
        assert_eq!(header.ty, Some(AttrType::StringArray));
        assert!(lookup("run_id").is_none());
        assert!(lookup("http.routes").is_none());
    }

    #[test]
    fn the_table_is_sorted_and_unique() {
        assert!(attributes().windows(2).all(|w| w[0].name < w[1].name));
        assert!(attributes().len() > 500, "{}", attributes().len());
    }

    #[test]
    fn types_of_otlp_values() {
        use any_value::Value as V;
        let v = |x| AnyValue { value: Some(x) };
        assert_eq!(AttrType::of(&v(V::IntValue(3))), Some(AttrType::Int));
        assert_eq!(
            AttrType::of(&v(V::StringValue("3".into()))),
            Some(AttrType::String)
        );
        let arr = |xs: Vec<V>| {
            v(V::ArrayValue(
                opentelemetry_proto::tonic::common::v1::ArrayValue {
                    values: xs
                        .into_iter()
                        .map(|x| AnyValue { value: Some(x) })
                        .collect(),
                },
            ))
        };
        assert_eq!(
            AttrType::of(&arr(vec![V::BoolValue(true)])),
            Some(AttrType::BoolArray)
        );
        assert_eq!(
            AttrType::of(&arr(vec![V::BoolValue(true), V::IntValue(1)])),
            None
        );
        for t in AttrType::ALL {
            assert_eq!(AttrType::parse(t.name()), Some(t));
        }
    }
}
