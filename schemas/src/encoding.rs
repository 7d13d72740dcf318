//! How Avro values are framed on Kafka, with or without a schema registry.
//!
//! Two framings exist, told apart by the first byte of a value:
//!
//! - `C3 01`, 8-byte fingerprint, datum: Avro single-object encoding ([`Framing::SingleObject`]),
//!   written when no registry is configured. Consumers need only the `.avsc` files.
//! - `00`, 4-byte big-endian schema id, datum: the Confluent wire format
//!   ([`Framing::Confluent`]), written when a registry is configured. Consumers look the
//!   writer schema up by id.
//!
//! An [`Encoder`] writes one framing and reads both, so a topic can move from one to the
//! other without its readers noticing. With a registry, each producer registers the schema
//! of each topic it writes at start ([`Encoder::register`], subject `<topic>-value`, the
//! topic-name strategy) and keeps the ids; encoding is then synchronous and does no I/O.
//! Decoding looks a schema id up in a cache filled by registration and by earlier lookups;
//! an id it has never seen is fetched from the registry once ([`Encoder::decode`]), and an
//! id the registry does not know is remembered as unknown, so a bad value costs one
//! request, not one per read. Every check of the header (length, magic, fingerprint, id)
//! happens before any byte of the datum is read, and errors are [`EncodingError`]s, never
//! panics.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use apache_avro::Schema;

use crate::avro::{self, AvroError, AvroRecord, HEADER_LEN, SINGLE_OBJECT_MARKER};
use crate::datum::WriterSchema;
use crate::registry::{value_subject, RegistryClient, RegistryError, SchemaId};

/// The byte that opens a value in the Confluent wire format.
pub const CONFLUENT_MAGIC: u8 = 0;

/// Length of the Confluent header: the magic byte and the 4-byte schema id.
pub const CONFLUENT_HEADER_LEN: usize = 5;

/// How a value is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// Avro single-object encoding: `C3 01`, fingerprint, datum.
    SingleObject,
    /// The Confluent wire format: `00`, schema id, datum.
    Confluent,
}

impl Framing {
    /// The framing a value's first byte announces, if any.
    pub fn of(bytes: &[u8]) -> Option<Framing> {
        match bytes.first() {
            Some(&first) if first == SINGLE_OBJECT_MARKER[0] => Some(Framing::SingleObject),
            Some(&CONFLUENT_MAGIC) => Some(Framing::Confluent),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Framing::SingleObject => "single-object",
            Framing::Confluent => "confluent",
        }
    }
}

/// A value's header: what identifies the schema it was written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    SingleObject { fingerprint: [u8; 8] },
    Confluent { schema_id: SchemaId },
}

impl Header {
    /// Splits a value into its header and its datum, checking the header only.
    pub fn parse(bytes: &[u8]) -> Result<(Header, &[u8]), EncodingError> {
        match Framing::of(bytes) {
            Some(Framing::SingleObject) => {
                if bytes.len() < HEADER_LEN {
                    return Err(AvroError::Truncated { len: bytes.len() }.into());
                }
                if bytes[..2] != SINGLE_OBJECT_MARKER {
                    return Err(AvroError::NotSingleObject.into());
                }
                let mut fingerprint = [0; 8];
                fingerprint.copy_from_slice(&bytes[2..HEADER_LEN]);
                Ok((Header::SingleObject { fingerprint }, &bytes[HEADER_LEN..]))
            }
            Some(Framing::Confluent) => {
                if bytes.len() < CONFLUENT_HEADER_LEN {
                    return Err(EncodingError::ConfluentTruncated { len: bytes.len() });
                }
                let mut id = [0; 4];
                id.copy_from_slice(&bytes[1..CONFLUENT_HEADER_LEN]);
                let schema_id = SchemaId(u32::from_be_bytes(id));
                Ok((
                    Header::Confluent { schema_id },
                    &bytes[CONFLUENT_HEADER_LEN..],
                ))
            }
            None => match bytes.first() {
                None => Err(EncodingError::Empty),
                Some(&first) => Err(EncodingError::UnknownFraming { first }),
            },
        }
    }

    pub fn framing(&self) -> Framing {
        match self {
            Header::SingleObject { .. } => Framing::SingleObject,
            Header::Confluent { .. } => Framing::Confluent,
        }
    }
}

/// A value could not be framed, unframed, encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodingError {
    /// The datum or the single-object header (truncated, unknown fingerprint, bad payload).
    #[error(transparent)]
    Avro(#[from] AvroError),
    #[error("value is empty; a deleted thing is a null value (tombstone), not zero bytes")]
    Empty,
    #[error(
        "value starts with byte {first:#04x}, which opens neither Avro single-object \
         encoding (C3 01) nor the Confluent wire format (00)"
    )]
    UnknownFraming { first: u8 },
    #[error(
        "value is {len} bytes, shorter than the 5-byte Confluent header (00 and a 4-byte \
         schema id)"
    )]
    ConfluentTruncated { len: usize },
    #[error("value was written with schema id {id}, which {reason}")]
    UnknownSchemaId { id: SchemaId, reason: String },
    #[error(
        "schema id {id} has not been looked up yet; Encoder::decode (or load_schema) \
         fetches it from the registry"
    )]
    SchemaNotCached { id: SchemaId },
    #[error("value holds a {found}, not a {expected}; the topic carries another record")]
    WrongRecord { expected: String, found: String },
    #[error(
        "no schema of {record} is registered for topic {topic}; call \
         Encoder::register::<{record}>(\"{topic}\") at start"
    )]
    NotRegistered { topic: String, record: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl EncodingError {
    /// Whether the same call may succeed later (the registry was unreachable or busy).
    /// Every other error is final for this value: dead-letter it, or fix the config.
    pub fn is_retriable(&self) -> bool {
        match self {
            EncodingError::Registry(e) => e.is_retriable(),
            _ => false,
        }
    }
}

/// Writes Avro values in one framing and reads both. Cheap to clone: clones share the
/// caches.
#[derive(Clone, Debug)]
pub struct Encoder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Option<RegistryClient>,
    /// The id registered for each topic, and the fingerprint of the schema behind it.
    topics: RwLock<HashMap<String, Registration>>,
    /// Writer schemas by id: registered, fetched, or known to be unknown.
    schemas: RwLock<HashMap<SchemaId, Lookup>>,
    /// Held while fetching, so that readers missing the same id wait for one request.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Clone, Copy, Debug)]
struct Registration {
    id: SchemaId,
    fingerprint: [u8; 8],
}

#[derive(Clone, Debug)]
enum Lookup {
    Found(Arc<Writer>),
    /// Why the id cannot be used; final, so it is not asked again.
    Missing(String),
}

/// A writer schema from the registry.
#[derive(Debug)]
struct Writer {
    schema: WriterSchema,
    fingerprint: [u8; 8],
    name: String,
}

impl Writer {
    fn new(schema: Schema) -> Result<Self, AvroError> {
        let fingerprint = avro::fingerprint(&schema);
        let name = schema.name().map(|n| n.fullname(None)).unwrap_or_default();
        let schema = WriterSchema::new(schema).map_err(AvroError::Schema)?;
        Ok(Self {
            schema,
            fingerprint,
            name,
        })
    }
}

impl Encoder {
    /// Writes single-object encoding; reads Confluent-framed values only for schema ids
    /// it was told about, which without a registry is none.
    pub fn single_object() -> Self {
        Self::with(None)
    }

    /// Writes the Confluent wire format with ids from `registry`; fetches unknown ids
    /// from it when reading.
    pub fn confluent(registry: RegistryClient) -> Self {
        Self::with(Some(registry))
    }

    /// The encoder a service's configuration asks for: Confluent framing with the
    /// registry at `registry_url` when one is set, single-object encoding otherwise.
    pub fn from_url(registry_url: Option<&str>) -> Result<Self, RegistryError> {
        match registry_url {
            Some(url) => Ok(Self::confluent(RegistryClient::new(url)?)),
            None => Ok(Self::single_object()),
        }
    }

    fn with(registry: Option<RegistryClient>) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                topics: RwLock::default(),
                schemas: RwLock::default(),
                fetching: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The framing this encoder writes.
    pub fn framing(&self) -> Framing {
        match self.inner.registry {
            Some(_) => Framing::Confluent,
            None => Framing::SingleObject,
        }
    }

    pub fn registry(&self) -> Option<&RegistryClient> {
        self.inner.registry.as_ref()
    }

    /// Registers `T`'s schema for `topic` (subject `<topic>-value`) and keeps its id for
    /// [`Encoder::encode`]. Call it at start for every topic the service writes, with the
    /// prefixed topic name; it returns `None` without a registry. A registry that cannot
    /// be reached is retriable ([`EncodingError::is_retriable`]); one that calls the
    /// schema incompatible needs a compatible schema version.
    pub async fn register<T: AvroRecord>(
        &self,
        topic: &str,
    ) -> Result<Option<SchemaId>, EncodingError> {
        let Some(registry) = &self.inner.registry else {
            return Ok(None);
        };
        let codec = T::codec();
        let id = registry.register(&value_subject(topic), T::SCHEMA).await?;

        let registration = Registration {
            id,
            fingerprint: codec.fingerprint(),
        };
        write(&self.inner.topics).insert(topic.to_string(), registration);
        let writer = Writer::new(codec.schema().clone())?;
        write(&self.inner.schemas).insert(id, Lookup::Found(Arc::new(writer)));
        Ok(Some(id))
    }

    /// The id registered for `topic`, if any.
    pub fn schema_id(&self, topic: &str) -> Option<SchemaId> {
        read(&self.inner.topics).get(topic).map(|r| r.id)
    }

    /// Encodes `value` for `topic` in this encoder's framing. With a registry, `T` must
    /// have been registered for `topic`; this never does I/O.
    pub fn encode<T: AvroRecord>(&self, topic: &str, value: &T) -> Result<Vec<u8>, EncodingError> {
        if self.inner.registry.is_none() {
            return Ok(value.to_avro()?);
        }
        let codec = T::codec();
        let id = match read(&self.inner.topics).get(topic) {
            Some(registration) if registration.fingerprint == codec.fingerprint() => {
                registration.id
            }
            _ => {
                return Err(EncodingError::NotRegistered {
                    topic: topic.to_string(),
                    record: short_name(codec.schema()),
                })
            }
        };

        let mut out = Vec::with_capacity(512);
        out.push(CONFLUENT_MAGIC);
        out.extend_from_slice(&id.0.to_be_bytes());
        codec.write_datum(value, &mut out)?;
        Ok(out)
    }

    /// Decodes a value in either framing, fetching its writer schema from the registry
    /// the first time a schema id is seen.
    pub async fn decode<T: AvroRecord>(&self, bytes: &[u8]) -> Result<T, EncodingError> {
        match self.decode_cached(bytes) {
            Err(EncodingError::SchemaNotCached { id }) => {
                self.load_schema(id).await?;
                self.decode_cached(bytes)
            }
            other => other,
        }
    }

    /// Decodes a value in either framing without any I/O: a schema id that was never
    /// looked up is [`EncodingError::SchemaNotCached`] (then [`Encoder::load_schema`] and
    /// try again, or use [`Encoder::decode`]).
    pub fn decode_cached<T: AvroRecord>(&self, bytes: &[u8]) -> Result<T, EncodingError> {
        let (header, datum) = Header::parse(bytes)?;
        let id = match header {
            Header::SingleObject { .. } => return Ok(T::from_avro(bytes)?),
            Header::Confluent { schema_id } => schema_id,
        };
        let lookup = read(&self.inner.schemas).get(&id).cloned();
        match lookup {
            Some(lookup) => decode_with(&*lookup.writer(id)?, datum),
            None if self.inner.registry.is_none() => Err(EncodingError::UnknownSchemaId {
                id,
                reason: "cannot be looked up: no schema registry is configured".into(),
            }),
            None => Err(EncodingError::SchemaNotCached { id }),
        }
    }

    /// Makes sure the writer schema of `id` is cached, fetching it from the registry if
    /// it is not. An id the registry does not know (or that is not an Avro schema) is
    /// remembered as such and never fetched again; a registry that could not be reached
    /// leaves nothing cached, so the next call asks again.
    pub async fn load_schema(&self, id: SchemaId) -> Result<(), EncodingError> {
        if let Some(lookup) = read(&self.inner.schemas).get(&id) {
            return lookup.writer(id).map(drop);
        }
        let Some(registry) = &self.inner.registry else {
            return Err(EncodingError::UnknownSchemaId {
                id,
                reason: "cannot be looked up: no schema registry is configured".into(),
            });
        };

        // One fetch at a time: whoever waited here finds the id cached by the first.
        let _one_at_a_time = self.inner.fetching.lock().await;
        if let Some(lookup) = read(&self.inner.schemas).get(&id) {
            return lookup.writer(id).map(drop);
        }
        let lookup = match registry.schema(id).await {
            Ok(text) => match parse_untrusted(&text).and_then(Writer::new) {
                Ok(writer) => Lookup::Found(Arc::new(writer)),
                Err(e) => Lookup::Missing(format!("is not a usable Avro schema: {e}")),
            },
            Err(RegistryError::SchemaNotFound { .. }) => {
                Lookup::Missing("the schema registry does not know".into())
            }
            Err(RegistryError::NotAvro { schema_type, .. }) => {
                Lookup::Missing(format!("is a {schema_type} schema, not Avro"))
            }
            Err(other) => return Err(other.into()),
        };
        write(&self.inner.schemas).insert(id, lookup.clone());
        lookup.writer(id).map(drop)
    }
}

impl Lookup {
    fn writer(&self, id: SchemaId) -> Result<Arc<Writer>, EncodingError> {
        match self {
            Lookup::Found(writer) => Ok(writer.clone()),
            Lookup::Missing(reason) => Err(EncodingError::UnknownSchemaId {
                id,
                reason: reason.clone(),
            }),
        }
    }
}

/// Decodes a Confluent datum written with `writer` into `T`, resolving schemas when the
/// writer's is not `T`'s current one.
fn decode_with<T: AvroRecord>(writer: &Writer, datum: &[u8]) -> Result<T, EncodingError> {
    let codec = T::codec();
    if writer.fingerprint == codec.fingerprint() {
        return Ok(codec.decode_datum(datum)?);
    }
    if writer.name != codec.name() {
        return Err(EncodingError::WrongRecord {
            expected: codec.name(),
            found: writer.name.clone(),
        });
    }
    Ok(codec.decode_datum_with(&writer.schema, datum)?)
}

/// Parses a schema that came from the registry. apache-avro 0.21's parser panics on some
/// malformed schemas (a nested record with an invalid name, for one) instead of returning
/// an error; a registry serving one must not take the service down, so the panic is
/// caught here and becomes an error.
fn parse_untrusted(text: &str) -> Result<Schema, AvroError> {
    match std::panic::catch_unwind(|| Schema::parse_str(text)) {
        Ok(parsed) => parsed.map_err(|e| AvroError::Schema(e.to_string())),
        Err(_) => Err(AvroError::Schema(
            "the Avro parser could not handle it".into(),
        )),
    }
}

fn short_name(schema: &Schema) -> String {
    schema.name().map(|n| n.name.clone()).unwrap_or_default()
}

/// Locks ignore poisoning: every write is a single insert, so a panic elsewhere cannot
/// leave a map half-updated.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_byte_tells_the_framing() {
        assert_eq!(Framing::of(&[0xC3, 0x01]), Some(Framing::SingleObject));
        assert_eq!(Framing::of(&[0x00]), Some(Framing::Confluent));
        assert_eq!(Framing::of(b"{"), None);
        assert_eq!(Framing::of(&[]), None);
    }

    #[test]
    fn headers_are_checked_before_the_datum() {
        assert!(matches!(Header::parse(&[]), Err(EncodingError::Empty)));
        assert!(matches!(
            Header::parse(&[0, 0, 0, 1]),
            Err(EncodingError::ConfluentTruncated { len: 4 })
        ));
        assert!(matches!(
            Header::parse(&[0xC3, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(EncodingError::Avro(AvroError::NotSingleObject))
        ));
        assert!(matches!(
            Header::parse(b"{}"),
            Err(EncodingError::UnknownFraming { first: b'{' })
        ));
        let (header, datum) = Header::parse(&[0, 0, 0, 1, 2, 9]).unwrap();
        assert_eq!(
            header,
            Header::Confluent {
                schema_id: SchemaId(258)
            }
        );
        assert_eq!(datum, &[9]);
    }
}
