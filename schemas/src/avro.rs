//! Avro encoding of seatwatch's records: Avro single-object encoding.
//!
//! Each value is `C3 01`, then the 8-byte little-endian CRC-64-AVRO (Rabin) fingerprint
//! of the writer schema's Parsing Canonical Form, then the Avro binary datum. Any consumer
//! that holds the `.avsc` can check the fingerprint and decode with a stock Avro library;
//! no registry is needed. The header is checked before the payload is read, so foreign or
//! truncated bytes are a typed error, never a panic.
//!
//! The fingerprint is computed here ([`fingerprint`]), not by apache-avro: apache-avro
//! 0.21 writes a primitive that carries a logical type as `{"type":"long"}` in the
//! canonical form, where the specification (and Java's and Python's Avro libraries) write
//! `"long"`, so its fingerprint of any schema with a timestamp differs from everyone
//! else's and a Java `BinaryMessageDecoder` would not recognise our values. Values written
//! before this was fixed carry apache-avro's fingerprint; codecs still accept it
//! ([`legacy_fingerprint`]) for the current and every published version.
//!
//! A codec knows every published version of its schema (`schemas/avro/published/`), so a
//! value written with an older version still decodes, resolved into the current schema by
//! Avro's rules; the compatibility tests guarantee that this resolution succeeds. Before
//! apache-avro decodes a datum it is walked once along the writer schema (see
//! `crate::datum`), so lengths and counts that the bytes cannot hold are refused first.
//!
//! The Confluent wire format and the registry live in [`crate::encoding`]; this module
//! offers the bare datum to it ([`AvroCodec::encode_datum`]).
//!
//! Encoding writes the datum straight from serde into the output buffer, along a copy of
//! the current schema that serde_avro_fast has resolved once (record fields in order,
//! named types linked), with no intermediate generic `Value` and no lookup by field name
//! per value. apache-avro's generic path (`to_value`, `resolve`, `to_avro_datum`) cost
//! several times as much and dominated transform's profile; its own direct writer
//! (`write_avro_datum_ref`) still spent half its time finding each field by name. Both
//! stay as references: property tests hold every record to byte equality with
//! apache-avro's serde writer, and every record without a map with the generic path
//! ([`AvroCodec::encode_datum_generic`]), which writes a map's entries in hash order.
//! Decoding stays with apache-avro, which resolves values written with older published
//! schemas.

use apache_avro::{from_avro_datum, from_value, to_avro_datum, to_value, Schema};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::datum::WriterSchema;

/// The two marker bytes that open a single-object encoded value.
pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];

/// Length of the single-object header: marker plus fingerprint.
pub const HEADER_LEN: usize = 10;

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    #[error("schema is invalid: {0}")]
    Schema(String),
    #[error("value does not fit the schema: {0}")]
    Encode(String),
    #[error("value is {len} bytes, shorter than the 10-byte single-object header")]
    Truncated { len: usize },
    #[error("value does not start with the Avro single-object marker C3 01")]
    NotSingleObject,
    #[error(
        "value was written with schema fingerprint {found}, not {expected} ({name}); \
         the producer uses a schema this reader does not know"
    )]
    UnknownFingerprint {
        found: String,
        expected: String,
        name: String,
    },
    #[error("payload does not decode with the schema: {0}")]
    Decode(String),
}

/// A schema with its fingerprint, ready to encode and decode.
#[derive(Debug)]
pub struct AvroCodec {
    /// The current schema first, then earlier published versions.
    writers: Vec<WriterSchema>,
    fingerprint: [u8; 8],
    /// Every fingerprint a value may carry (the specification's and apache-avro 0.21's
    /// for each writer), with the index of its writer.
    known: Vec<([u8; 8], usize)>,
    /// The current schema as serde_avro_fast resolved it, for writing datums.
    datum_writer: serde_avro_fast::Schema,
}

impl AvroCodec {
    pub fn new(schema_json: &str) -> Result<Self, AvroError> {
        Self::with_history(schema_json, &[])
    }

    /// A codec for `schema_json` that also decodes values written with any of
    /// `published` (the schema's published versions), resolving them into `schema_json`.
    pub fn with_history(schema_json: &str, published: &[&str]) -> Result<Self, AvroError> {
        let current = parse(schema_json)?;
        let fingerprint = self::fingerprint(&current);
        let datum_writer = schema_json
            .parse()
            .map_err(|e: serde_avro_fast::schema::SchemaError| AvroError::Schema(e.to_string()))?;
        let mut codec = Self {
            writers: Vec::new(),
            fingerprint,
            known: Vec::new(),
            datum_writer,
        };
        codec.learn(current)?;
        for text in published {
            codec.learn(parse(text)?)?;
        }
        Ok(codec)
    }

    /// Adds a writer schema unless one with the same fingerprint is known.
    fn learn(&mut self, schema: Schema) -> Result<(), AvroError> {
        let prints = [fingerprint(&schema), legacy_fingerprint(&schema)];
        if self.known.iter().any(|(known, _)| *known == prints[0]) {
            return Ok(());
        }
        let writer = WriterSchema::new(schema).map_err(AvroError::Schema)?;
        let index = self.writers.len();
        self.writers.push(writer);
        for print in prints {
            if self.known.iter().all(|(known, _)| *known != print) {
                self.known.push((print, index));
            }
        }
        Ok(())
    }

    pub fn schema(&self) -> &Schema {
        &self.writers[0].schema
    }

    /// The 8-byte fingerprint as written in the header.
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// Every fingerprint this codec decodes: the current schema's own first, then its
    /// legacy one (see [`legacy_fingerprint`]) and those of earlier published versions.
    pub fn known_fingerprints(&self) -> Vec<[u8; 8]> {
        self.known.iter().map(|(print, _)| *print).collect()
    }

    /// Encodes `value` with the single-object header.
    pub fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, AvroError> {
        let mut out = Vec::with_capacity(ENCODE_CAPACITY);
        out.extend_from_slice(&SINGLE_OBJECT_MARKER);
        out.extend_from_slice(&self.fingerprint);
        self.write_datum(value, &mut out)?;
        Ok(out)
    }

    /// Encodes `value` as a bare Avro binary datum, without any header.
    pub fn encode_datum<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, AvroError> {
        let mut out = Vec::with_capacity(ENCODE_CAPACITY);
        self.write_datum(value, &mut out)?;
        Ok(out)
    }

    /// Appends `value`'s datum to `out`, straight from serde. On error `out` may hold a
    /// partial datum.
    pub fn write_datum<T: Serialize>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), AvroError> {
        let mut config = serde_avro_fast::ser::SerializerConfig::new(&self.datum_writer);
        serde_avro_fast::to_datum(value, out, &mut config)
            .map(drop)
            .map_err(|e| AvroError::Encode(e.to_string()))
    }

    /// Encodes `value` as a bare datum through apache-avro's generic `Value`, resolving it
    /// against the schema first. Slower than [`AvroCodec::encode_datum`], and the
    /// reference it is tested against.
    pub fn encode_datum_generic<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, AvroError> {
        let generic = to_value(value).map_err(|e| AvroError::Encode(e.to_string()))?;
        let resolved = generic
            .resolve(self.schema())
            .map_err(|e| AvroError::Encode(e.to_string()))?;
        to_avro_datum(self.schema(), resolved).map_err(|e| AvroError::Encode(e.to_string()))
    }

    /// Decodes a single-object encoded value, checking the header first. Values written
    /// with an earlier published version of the schema are resolved into the current one.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, AvroError> {
        if bytes.len() < HEADER_LEN {
            return Err(AvroError::Truncated { len: bytes.len() });
        }
        if bytes[..2] != SINGLE_OBJECT_MARKER {
            return Err(AvroError::NotSingleObject);
        }
        let found = &bytes[2..HEADER_LEN];
        match self.known.iter().find(|(print, _)| print == found) {
            Some((_, index)) => self.decode_datum_with(&self.writers[*index], &bytes[HEADER_LEN..]),
            None => Err(AvroError::UnknownFingerprint {
                found: hex(found),
                expected: hex(&self.fingerprint),
                name: self.name(),
            }),
        }
    }

    /// Decodes a bare datum written with this codec's current schema.
    pub fn decode_datum<T: DeserializeOwned>(&self, datum: &[u8]) -> Result<T, AvroError> {
        self.decode_datum_with(&self.writers[0], datum)
    }

    /// Decodes a bare datum written with `writer`, resolved into the current schema.
    pub(crate) fn decode_datum_with<T: DeserializeOwned>(
        &self,
        writer: &WriterSchema,
        datum: &[u8],
    ) -> Result<T, AvroError> {
        writer.check(datum).map_err(AvroError::Decode)?;
        let reader = (!std::ptr::eq(writer, &self.writers[0])).then(|| self.schema());
        let mut payload = datum;
        let value = from_avro_datum(&writer.schema, &mut payload, reader)
            .map_err(|e| AvroError::Decode(e.to_string()))?;
        if !payload.is_empty() {
            return Err(AvroError::Decode(format!(
                "{} trailing bytes",
                payload.len()
            )));
        }
        from_value(&value).map_err(|e| AvroError::Decode(e.to_string()))
    }

    /// The schema's full name, e.g. `io.seatwatch.seats.LicenseState`.
    pub fn name(&self) -> String {
        self.schema()
            .name()
            .map(|n| n.fullname(None))
            .unwrap_or_default()
    }
}

/// Room reserved for one encoded value: every seat-state value fits, so encoding
/// allocates once.
const ENCODE_CAPACITY: usize = 512;

fn parse(schema_json: &str) -> Result<Schema, AvroError> {
    Schema::parse_str(schema_json).map_err(|e| AvroError::Schema(e.to_string()))
}

/// The schema's Parsing Canonical Form as the Avro specification defines it: primitives
/// as bare names, named types with full names and only `name`, `type`, `fields`,
/// `symbols`, `items`, `values` and `size`, in that order, no whitespace.
///
/// Built from the schema's JSON rather than taken from apache-avro, whose
/// `canonical_form` keeps parts the specification strips (`{"type":"long"}` for a
/// timestamp, a decimal's precision and scale).
pub fn canonical_form(schema: &Schema) -> String {
    let json = serde_json::to_value(schema).unwrap_or(serde_json::Value::Null);
    let mut out = String::new();
    canonical(&json, "", &mut out);
    out
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// Appends the canonical form of `json`, a schema inside namespace `namespace`.
fn canonical(json: &serde_json::Value, namespace: &str, out: &mut String) {
    use serde_json::Value;

    let quoted = |text: &str| Value::from(text).to_string();
    match json {
        Value::String(name) if PRIMITIVES.contains(&name.as_str()) => out.push_str(&quoted(name)),
        Value::String(name) => out.push_str(&quoted(&full_name(name, None, namespace).0)),
        Value::Array(branches) => {
            out.push('[');
            for (i, branch) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(branch, namespace, out);
            }
            out.push(']');
        }
        Value::Object(object) => {
            let kind = match object.get("type") {
                Some(Value::String(kind)) => kind.as_str(),
                Some(inner) => return canonical(inner, namespace, out),
                None => "",
            };
            match kind {
                "record" | "error" | "enum" | "fixed" => {
                    let name = object.get("name").and_then(Value::as_str).unwrap_or("");
                    let declared = object.get("namespace").and_then(Value::as_str);
                    let (full, inner) = full_name(name, declared, namespace);
                    out.push_str(&format!(
                        r#"{{"name":{},"type":{}"#,
                        quoted(&full),
                        quoted(kind)
                    ));
                    match kind {
                        "enum" => {
                            let symbols = object.get("symbols").cloned().unwrap_or_default();
                            out.push_str(&format!(r#","symbols":{symbols}"#));
                        }
                        "fixed" => {
                            let size = object.get("size").cloned().unwrap_or_default();
                            out.push_str(&format!(r#","size":{size}"#));
                        }
                        _ => {
                            out.push_str(r#","fields":["#);
                            let fields = object.get("fields").and_then(Value::as_array);
                            for (i, field) in fields.into_iter().flatten().enumerate() {
                                if i > 0 {
                                    out.push(',');
                                }
                                let field_name =
                                    field.get("name").and_then(Value::as_str).unwrap_or("");
                                out.push_str(&format!(
                                    r#"{{"name":{},"type":"#,
                                    quoted(field_name)
                                ));
                                canonical(&field["type"], &inner, out);
                                out.push('}');
                            }
                            out.push(']');
                        }
                    }
                    out.push('}');
                }
                "array" => {
                    out.push_str(r#"{"type":"array","items":"#);
                    canonical(&object["items"], namespace, out);
                    out.push('}');
                }
                "map" => {
                    out.push_str(r#"{"type":"map","values":"#);
                    canonical(&object["values"], namespace, out);
                    out.push('}');
                }
                // A primitive, possibly with a logical type, or a reference by name.
                other => canonical(&Value::from(other), namespace, out),
            }
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The full name of a named type and the namespace its own definitions inherit: a dotted
/// name is already full; otherwise the declared namespace, else the enclosing one.
fn full_name(name: &str, declared: Option<&str>, enclosing: &str) -> (String, String) {
    if let Some((space, _)) = name.rsplit_once('.') {
        return (name.to_string(), space.to_string());
    }
    let space = declared.unwrap_or(enclosing);
    if space.is_empty() {
        (name.to_string(), String::new())
    } else {
        (format!("{space}.{name}"), space.to_string())
    }
}

/// The CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form, in the byte order
/// single-object encoding writes it (little-endian): the same as Java's
/// `SchemaNormalization.parsingFingerprint64` and fastavro's `fingerprint(.., "CRC-64-AVRO")`.
pub fn fingerprint(schema: &Schema) -> [u8; 8] {
    crc64_avro(canonical_form(schema).as_bytes()).to_le_bytes()
}

/// The fingerprint apache-avro 0.21 computes (over its own canonical form), which values
/// written before seatwatch computed its own carry. Equal to [`fingerprint`] for schemas
/// without logical types on primitives.
pub fn legacy_fingerprint(schema: &Schema) -> [u8; 8] {
    crc64_avro(schema.canonical_form().as_bytes()).to_le_bytes()
}

/// The 64-bit Rabin fingerprint the Avro specification names CRC-64-AVRO.
fn crc64_avro(bytes: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u64; 256];
        for (i, entry) in table.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & 0u64.wrapping_sub(fp & 1));
            }
            *entry = fp;
        }
        table
    });
    bytes.iter().fold(EMPTY, |fp, byte| {
        (fp >> 8) ^ table[((fp ^ u64::from(*byte)) & 0xff) as usize]
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A record type with a published schema.
pub trait AvroRecord: Serialize + DeserializeOwned + 'static {
    /// The `.avsc` text.
    const SCHEMA: &'static str;

    /// Every published version of the schema, oldest first
    /// (`schemas/avro/published/<name>/v<n>.avsc`); the last one equals [`Self::SCHEMA`].
    /// Values written with any of them decode.
    const PUBLISHED: &'static [&'static str] = &[];

    /// The type's codec, built once. Panics only if an embedded schema is invalid, which
    /// the crate's tests rule out.
    fn codec() -> &'static AvroCodec;

    fn to_avro(&self) -> Result<Vec<u8>, AvroError> {
        Self::codec().encode(self)
    }

    fn from_avro(bytes: &[u8]) -> Result<Self, AvroError> {
        Self::codec().decode(bytes)
    }
}

/// Implements [`AvroRecord::codec`] with a per-type `OnceLock`.
#[macro_export]
#[doc(hidden)]
macro_rules! codec_once {
    () => {
        fn codec() -> &'static $crate::avro::AvroCodec {
            static CODEC: ::std::sync::OnceLock<$crate::avro::AvroCodec> =
                ::std::sync::OnceLock::new();
            CODEC.get_or_init(|| {
                $crate::avro::AvroCodec::with_history(Self::SCHEMA, Self::PUBLISHED)
                    .expect("embedded schemas are valid")
            })
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(schema: &str) -> String {
        hex(&fingerprint(&Schema::parse_str(schema).unwrap()))
    }

    #[test]
    fn fingerprints_agree_with_other_avro_libraries() {
        // Expected values as fastavro 1.13 computes them (`fingerprint(.., "CRC-64-AVRO")`
        // prints the bytes in header order).
        assert_eq!(hex_of(r#""null""#), "8a8f25cce724dd63");
        assert_eq!(hex_of(r#""int""#), "8f5c393f1ad57572");
        assert_eq!(
            hex_of(r#"{"type":"long","logicalType":"timestamp-millis"}"#),
            "b71df49344e154d0"
        );

        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","namespace":"a.b","fields":[
                {"name":"t","type":["null",{"type":"long","logicalType":"timestamp-millis"}],
                 "default":null,"doc":"x"},
                {"name":"d","type":{"type":"bytes","logicalType":"decimal",
                                    "precision":4,"scale":2}},
                {"name":"u","type":{"type":"string","logicalType":"uuid"}},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["A"],"default":"A"}},
                {"name":"f","type":{"type":"fixed","name":"F","size":2}},
                {"name":"m","type":{"type":"map","values":"E"}}
            ]}"#,
        )
        .unwrap();
        let expected = [
            r#"{"name":"a.b.R","type":"record","fields":["#,
            r#"{"name":"t","type":["null","long"]},"#,
            r#"{"name":"d","type":"bytes"},"#,
            r#"{"name":"u","type":"string"},"#,
            r#"{"name":"e","type":{"name":"a.b.E","type":"enum","symbols":["A"]}},"#,
            r#"{"name":"f","type":{"name":"a.b.F","type":"fixed","size":2}},"#,
            r#"{"name":"m","type":{"type":"map","values":"a.b.E"}}]}"#,
        ];
        assert_eq!(canonical_form(&schema), expected.concat());
        assert_eq!(hex(&fingerprint(&schema)), "fe46a3c9fa493ec0");
        assert_ne!(fingerprint(&schema), legacy_fingerprint(&schema));
    }

    #[test]
    fn values_with_the_legacy_fingerprint_still_decode() {
        let text = r#"{"type":"record","name":"R","fields":[
            {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
        let codec = AvroCodec::new(text).unwrap();
        let legacy = legacy_fingerprint(codec.schema());
        assert_ne!(legacy, codec.fingerprint());
        assert_eq!(codec.known_fingerprints(), [codec.fingerprint(), legacy]);

        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct R {
            at: i64,
        }
        let mut bytes = codec.encode(&R { at: 5 }).unwrap();
        bytes[2..HEADER_LEN].copy_from_slice(&legacy);
        assert_eq!(codec.decode::<R>(&bytes).unwrap(), R { at: 5 });
    }
}
