//! Avro encoding of seatwatch's records: Avro single-object encoding.
//!
//! Each value is `C3 01`, then the 8-byte little-endian CRC-64-AVRO (Rabin) fingerprint
//! of the writer schema's canonical form, then the Avro binary datum. Any consumer that
//! holds the `.avsc` can check the fingerprint and decode with a stock Avro library; no
//! registry is needed. The header is checked before the payload is read, so foreign or
//! truncated bytes are a typed error, never a panic.
//!
//! Known shortcut: encoding goes through apache-avro's generic `Value`. It is correct and
//! measured fast enough for the skeleton; a serde-direct writer is the next step when the
//! throughput benchmark asks for it.

use apache_avro::rabin::Rabin;
use apache_avro::{from_avro_datum, from_value, to_avro_datum, to_value, Schema};
use serde::de::DeserializeOwned;
use serde::Serialize;

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
    schema: Schema,
    fingerprint: [u8; 8],
}

impl AvroCodec {
    pub fn new(schema_json: &str) -> Result<Self, AvroError> {
        let schema =
            Schema::parse_str(schema_json).map_err(|e| AvroError::Schema(e.to_string()))?;
        let bytes = schema.fingerprint::<Rabin>().bytes;
        let fingerprint: [u8; 8] = bytes
            .try_into()
            .map_err(|_| AvroError::Schema("Rabin fingerprint is not 8 bytes".into()))?;
        Ok(Self {
            schema,
            fingerprint,
        })
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The 8-byte fingerprint as written in the header.
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// Encodes `value` with the single-object header.
    pub fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, AvroError> {
        let generic = to_value(value).map_err(|e| AvroError::Encode(e.to_string()))?;
        let resolved = generic
            .resolve(&self.schema)
            .map_err(|e| AvroError::Encode(e.to_string()))?;
        let datum =
            to_avro_datum(&self.schema, resolved).map_err(|e| AvroError::Encode(e.to_string()))?;

        let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
        out.extend_from_slice(&SINGLE_OBJECT_MARKER);
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&datum);
        Ok(out)
    }

    /// Decodes a single-object encoded value, checking the header first.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, AvroError> {
        if bytes.len() < HEADER_LEN {
            return Err(AvroError::Truncated { len: bytes.len() });
        }
        if bytes[..2] != SINGLE_OBJECT_MARKER {
            return Err(AvroError::NotSingleObject);
        }
        if bytes[2..HEADER_LEN] != self.fingerprint {
            return Err(AvroError::UnknownFingerprint {
                found: hex(&bytes[2..HEADER_LEN]),
                expected: hex(&self.fingerprint),
                name: self
                    .schema
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            });
        }

        let mut payload = &bytes[HEADER_LEN..];
        let value = from_avro_datum(&self.schema, &mut payload, None)
            .map_err(|e| AvroError::Decode(e.to_string()))?;
        if !payload.is_empty() {
            return Err(AvroError::Decode(format!(
                "{} trailing bytes",
                payload.len()
            )));
        }
        from_value(&value).map_err(|e| AvroError::Decode(e.to_string()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A record type with a published schema.
pub trait AvroRecord: Serialize + DeserializeOwned + 'static {
    /// The `.avsc` text.
    const SCHEMA: &'static str;

    /// The type's codec, built once. Panics only if the embedded schema is invalid, which
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
                $crate::avro::AvroCodec::new(Self::SCHEMA).expect("embedded schema is valid")
            })
        }
    };
}
