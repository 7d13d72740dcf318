//! A bounds check of an Avro binary datum, run before apache-avro decodes it.
//!
//! apache-avro trusts the lengths and counts it reads: an array that announces 500 million
//! items makes it reserve room for them before it finds that the bytes ran out, which can
//! abort the process. Decoders here first walk the datum along the writer schema without
//! allocating, and refuse it unless every string, byte string and block of items fits in
//! the bytes that are left, every union branch and enum symbol exists, nesting stays
//! shallow and no byte is left over. Only then does apache-avro see it, so a foreign or
//! corrupt value is a typed error, never an abort or a panic.

use std::collections::HashMap;

use apache_avro::schema::{Name, ResolvedSchema, Schema};

/// How deep unions, arrays, maps and records may nest in one datum. seatwatch's schemas
/// nest three deep; a recursive writer schema could otherwise exhaust the stack.
const MAX_DEPTH: usize = 64;

/// How many items of a type that encodes in zero bytes (`null`, an empty record) one
/// datum may hold. Nothing bounds those by the length of the input, and no contract
/// needs them.
const MAX_EMPTY_ITEMS: usize = 1 << 16;

/// A writer schema with its named types, ready to check data written with it.
#[derive(Debug)]
pub(crate) struct WriterSchema {
    pub(crate) schema: Schema,
    names: HashMap<Name, Schema>,
}

impl WriterSchema {
    pub(crate) fn new(schema: Schema) -> Result<Self, String> {
        let names = ResolvedSchema::try_from(&schema)
            .map_err(|e| e.to_string())?
            .get_names()
            .iter()
            .map(|(name, schema)| (name.clone(), (*schema).clone()))
            .collect();
        Ok(Self { schema, names })
    }

    /// Checks that `datum` is one complete value of this schema, as far as its shape goes
    /// (UTF-8 and value ranges are left to the decoder).
    pub(crate) fn check(&self, datum: &[u8]) -> Result<(), String> {
        let mut walk = Walk {
            names: &self.names,
            rest: datum,
            empty_items: 0,
        };
        walk.value(&self.schema, 0)?;
        match walk.rest.len() {
            0 => Ok(()),
            n => Err(format!("{n} trailing bytes after the value")),
        }
    }
}

struct Walk<'a> {
    names: &'a HashMap<Name, Schema>,
    rest: &'a [u8],
    empty_items: usize,
}

impl Walk<'_> {
    fn value(&mut self, schema: &Schema, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("value nests deeper than {MAX_DEPTH} levels"));
        }
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => match self.take(1)?[0] {
                0 | 1 => Ok(()),
                other => Err(format!("boolean byte is {other}, not 0 or 1")),
            },
            Schema::Int | Schema::Date | Schema::TimeMillis => {
                let n = self.varint()?;
                i32::try_from(n)
                    .map(drop)
                    .map_err(|_| format!("int {n} is out of range"))
            }
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.varint().map(drop),
            Schema::Float => self.take(4).map(drop),
            Schema::Double => self.take(8).map(drop),
            Schema::Bytes | Schema::String | Schema::BigDecimal | Schema::Uuid => {
                let len = self.length()?;
                self.take(len).map(drop)
            }
            Schema::Fixed(fixed) => self.take(fixed.size).map(drop),
            Schema::Duration => self.take(12).map(drop),
            Schema::Decimal(decimal) => self.value(&decimal.inner, depth + 1),
            Schema::Enum(schema) => {
                let index = self.varint()?;
                match usize::try_from(index) {
                    Ok(i) if i < schema.symbols.len() => Ok(()),
                    _ => Err(format!("enum {} has no symbol {index}", schema.name)),
                }
            }
            Schema::Union(union) => {
                let index = self.varint()?;
                let branch = usize::try_from(index)
                    .ok()
                    .and_then(|i| union.variants().get(i))
                    .ok_or_else(|| format!("union has no branch {index}"))?;
                self.value(branch, depth + 1)
            }
            Schema::Array(array) => self.blocks(&array.items, false, depth + 1),
            Schema::Map(map) => self.blocks(&map.types, true, depth + 1),
            Schema::Record(record) => record
                .fields
                .iter()
                .try_for_each(|field| self.value(&field.schema, depth + 1)),
            Schema::Ref { name } => {
                let names = self.names;
                let named = names
                    .get(name)
                    .ok_or_else(|| format!("schema refers to unknown type {name}"))?;
                self.value(named, depth + 1)
            }
        }
    }

    /// The blocks of an array or map: a count, then that many items, until a count of 0.
    fn blocks(&mut self, items: &Schema, keyed: bool, depth: usize) -> Result<(), String> {
        let min_item = min_len(items) + usize::from(keyed);
        loop {
            let count = self.varint()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes.
                self.varint()?;
            }
            let count = usize::try_from(count.unsigned_abs())
                .map_err(|_| format!("block of {count} items is too large"))?;

            // Refuse counts the remaining bytes cannot hold before looking at any item.
            if min_item == 0 {
                self.empty_items = self.empty_items.saturating_add(count);
                if self.empty_items > MAX_EMPTY_ITEMS {
                    return Err(format!(
                        "more than {MAX_EMPTY_ITEMS} items that take no bytes"
                    ));
                }
            } else if count > self.rest.len() / min_item {
                return Err(format!(
                    "block announces {count} items but only {} bytes are left",
                    self.rest.len()
                ));
            }

            for _ in 0..count {
                if keyed {
                    self.value(&Schema::String, depth)?;
                }
                self.value(items, depth)?;
            }
        }
    }

    /// A zig-zag varint as Avro writes `int` and `long`.
    fn varint(&mut self) -> Result<i64, String> {
        let mut raw: u64 = 0;
        for (i, byte) in self.rest.iter().enumerate().take(10) {
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        if self.rest.len() >= 10 {
            Err("varint is longer than 10 bytes".into())
        } else {
            Err("value ends inside a number".into())
        }
    }

    /// The length of a string or byte string, which must fit in the remaining bytes.
    fn length(&mut self) -> Result<usize, String> {
        let len = self.varint()?;
        match usize::try_from(len) {
            Ok(n) if n <= self.rest.len() => Ok(n),
            _ => Err(format!(
                "length {len} does not fit in the {} bytes left",
                self.rest.len()
            )),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if n > self.rest.len() {
            return Err(format!(
                "value needs {n} more bytes, {} are left",
                self.rest.len()
            ));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }
}

/// The fewest bytes one value of `schema` can take. References count as zero, which only
/// makes the check stricter.
fn min_len(schema: &Schema) -> usize {
    match schema {
        Schema::Null | Schema::Ref { .. } => 0,
        Schema::Float => 4,
        Schema::Double => 8,
        Schema::Duration => 12,
        Schema::Fixed(fixed) => fixed.size,
        Schema::Decimal(decimal) => min_len(&decimal.inner),
        Schema::Record(record) => record
            .fields
            .iter()
            .map(|field| min_len(&field.schema))
            .fold(0, usize::saturating_add),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(json: &str) -> WriterSchema {
        WriterSchema::new(Schema::parse_str(json).unwrap()).unwrap()
    }

    #[test]
    fn accepts_what_apache_avro_writes() {
        let schema = writer(
            r#"{"type":"record","name":"R","fields":[
                {"name":"s","type":"string"},
                {"name":"a","type":{"type":"array","items":"long"}},
                {"name":"m","type":{"type":"map","values":["null","double"]}},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}},
                {"name":"f","type":{"type":"fixed","name":"F","size":3}},
                {"name":"again","type":"E"}
            ]}"#,
        );
        let value = apache_avro::types::Value::Record(vec![
            ("s".into(), "héllo".into()),
            (
                "a".into(),
                apache_avro::types::Value::Array(vec![1i64.into(), (-300i64).into()]),
            ),
            (
                "m".into(),
                apache_avro::types::Value::Map(
                    [(
                        "k".to_string(),
                        apache_avro::types::Value::Union(1, Box::new(2.5f64.into())),
                    )]
                    .into(),
                ),
            ),
            ("e".into(), apache_avro::types::Value::Enum(1, "B".into())),
            (
                "f".into(),
                apache_avro::types::Value::Fixed(3, vec![1, 2, 3]),
            ),
            (
                "again".into(),
                apache_avro::types::Value::Enum(0, "A".into()),
            ),
        ]);
        let datum = apache_avro::to_avro_datum(&schema.schema, value).unwrap();
        schema.check(&datum).unwrap();
        assert!(schema.check(&datum[..datum.len() - 1]).is_err());
    }

    #[test]
    fn refuses_counts_and_lengths_the_bytes_cannot_hold() {
        let array = writer(r#"{"type":"array","items":"string"}"#);
        // 500 million items announced, two bytes present.
        let err = array.check(&[0x80, 0xd0, 0xac, 0xf3, 0x03, 0x02, 0x41]);
        assert!(err.unwrap_err().contains("items"));

        let string = writer(r#""string""#);
        assert!(string.check(&[0xfe, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(string.check(&[0x01]).is_err(), "negative length");

        let nulls = writer(r#"{"type":"array","items":"null"}"#);
        assert!(nulls.check(&[0x80, 0xd0, 0xac, 0xf3, 0x03, 0x00]).is_err());
        assert!(nulls.check(&[0x06, 0x00]).is_ok());
    }

    #[test]
    fn refuses_deep_recursion() {
        let list = writer(
            r#"{"type":"record","name":"Node","fields":[
                {"name":"next","type":["null","Node"]}
            ]}"#,
        );
        let mut deep = vec![0x02; 1000];
        deep.push(0x00);
        assert!(list.check(&deep).unwrap_err().contains("deeper"));
        assert!(list.check(&[0x02, 0x02, 0x00]).is_ok());
    }
}
