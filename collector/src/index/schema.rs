//! The index's schema: one document per log record.
//!
//! | field | type | why |
//! |---|---|---|
//! | `timestamp` | i64 ns, fast + stored | range filters (on the column) and newest-first order |
//! | `id` | u64, fast + stored | WAL batch and position: tie-break, cursors, tail, exactly-once |
//! | `node`, `source`, `severity` | raw string, indexed + stored | exact filters |
//! | `body` | text (default tokenizer), stored | full-text search |
//! | `attributes` | JSON, text, dotted keys expanded | `attributes.nvidia.xid:79` |
//! | `attributes_raw` | the attributes' JSON text, stored only | returned as sent |

use serde_json::{Map, Value as JsonValue};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, JsonObjectOptions, STORED, STRING, Schema, TEXT,
    TextFieldIndexing, Value,
};
use tantivy::{TantivyDocument, doc};

use super::LogRecord;
use super::record::AttributesJson;

/// The last record's attributes as [`Fields::document`] puts them in a document.
pub(crate) struct AttributesDoc {
    json: AttributesJson,
    /// `json`'s attributes as the indexed JSON object.
    object: tantivy::schema::OwnedValue,
}

impl Default for AttributesDoc {
    fn default() -> Self {
        AttributesDoc {
            json: AttributesJson::default(),
            object: tantivy::schema::OwnedValue::Null,
        }
    }
}

/// The fields of [`Schema`], looked up once.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    pub(crate) schema: Schema,
    pub(crate) timestamp: Field,
    pub(crate) id: Field,
    pub(crate) node: Field,
    pub(crate) source: Field,
    pub(crate) severity: Field,
    pub(crate) body: Field,
    pub(crate) attributes: Field,
    pub(crate) attributes_raw: Field,
}

impl Fields {
    pub(crate) fn new() -> Fields {
        let mut b = Schema::builder();
        // Not indexed: ranges on fast fields are read from the columns, and a term per
        // nanosecond or per record would cost more to index than the text.
        let timestamp = b.add_i64_field("timestamp", FAST | STORED);
        let id = b.add_u64_field("id", FAST | STORED);
        let node = b.add_text_field("node", STRING | STORED);
        let source = b.add_text_field("source", STRING | STORED);
        let severity = b.add_text_field("severity", STRING | STORED);
        let body = b.add_text_field("body", TEXT | STORED);
        let json = JsonObjectOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("default")
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            )
            .set_expand_dots_enabled();
        let attributes = b.add_json_field("attributes", json);
        let attributes_raw = b.add_text_field("attributes_raw", STORED);
        Fields {
            schema: b.build(),
            timestamp,
            id,
            node,
            source,
            severity,
            body,
            attributes,
            attributes_raw,
        }
    }

    /// The document of record `r` with id `id`. `attributes` keeps the last record's
    /// attributes in their indexed and stored forms: the lines of one file in a row
    /// carry the same ones.
    pub(crate) fn document(
        &self,
        r: &LogRecord,
        id: u64,
        attributes: &mut AttributesDoc,
    ) -> TantivyDocument {
        let mut d = doc!(
            self.timestamp => r.time_ns,
            self.id => id,
            self.node => r.node.as_str(),
            self.source => r.source.as_str(),
            self.severity => r.severity.as_str(),
            self.body => r.body.as_str(),
        );
        if !r.attributes.is_empty() {
            if attributes.json.set(&r.attributes) {
                attributes.object = tantivy::schema::OwnedValue::Object(
                    r.attributes
                        .iter()
                        .map(|(k, v)| (k.clone(), json_to_owned(v)))
                        .collect(),
                );
            }
            d.add_field_value(self.attributes, &attributes.object);
            d.add_text(self.attributes_raw, attributes.json.json());
        }
        d
    }

    /// A stored document back as a record and its id.
    pub(crate) fn record(&self, d: &TantivyDocument) -> (LogRecord, u64) {
        let text = |f: Field| {
            d.get_first(f)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let attributes: Map<String, JsonValue> = d
            .get_first(self.attributes_raw)
            .and_then(|v| v.as_str())
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        (
            LogRecord {
                time_ns: d
                    .get_first(self.timestamp)
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0),
                node: text(self.node),
                source: text(self.source),
                severity: text(self.severity),
                body: text(self.body),
                attributes,
            },
            d.get_first(self.id).and_then(|v| v.as_u64()).unwrap_or(0),
        )
    }
}

fn json_to_owned(v: &JsonValue) -> tantivy::schema::OwnedValue {
    use tantivy::schema::OwnedValue as O;
    match v {
        JsonValue::Null => O::Null,
        JsonValue::Bool(b) => O::Bool(*b),
        JsonValue::Number(n) => {
            if let Some(i) = n.as_i64() {
                O::I64(i)
            } else if let Some(u) = n.as_u64() {
                O::U64(u)
            } else {
                O::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        JsonValue::String(s) => O::Str(s.clone()),
        JsonValue::Array(a) => O::Array(a.iter().map(json_to_owned).collect()),
        JsonValue::Object(m) => O::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), json_to_owned(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `AttributesDoc` across records with changing attributes: each document
    /// carries its own record's attributes, indexed and stored.
    #[test]
    fn documents_in_a_row_keep_their_attributes() {
        let fields = Fields::new();
        let mut cache = AttributesDoc::default();
        let with = |path: &str, extra: Option<i64>| {
            let mut m = Map::new();
            m.insert("log.file.path".into(), JsonValue::from(path));
            if let Some(x) = extra {
                m.insert("nvidia.xid".into(), JsonValue::from(x));
            }
            m
        };
        let shapes = [
            with("/a", None),
            with("/a", None),
            with("/b", None),
            Map::new(),
            with("/a", Some(79)),
            with("/a", None),
        ];
        for (i, attributes) in shapes.iter().enumerate() {
            let r = LogRecord {
                time_ns: i as i64,
                node: "n".into(),
                source: "s".into(),
                severity: "info".into(),
                body: format!("line {i}"),
                attributes: attributes.clone(),
            };
            let d = fields.document(&r, i as u64, &mut cache);
            assert_eq!(fields.record(&d), (r.clone(), i as u64), "record {i}");
            let indexed = d
                .get_first(fields.attributes)
                .map(|v| tantivy::schema::OwnedValue::from(v.as_value()));
            let want = (!attributes.is_empty()).then(|| {
                tantivy::schema::OwnedValue::Object(
                    attributes
                        .iter()
                        .map(|(k, v)| (k.clone(), json_to_owned(v)))
                        .collect(),
                )
            });
            assert_eq!(indexed, want, "record {i}");
        }
    }
}
