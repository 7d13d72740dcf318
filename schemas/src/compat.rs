//! Schema evolution: whether a reader schema can read what a writer schema wrote.
//!
//! seatwatch's policy is [`POLICY`]: full compatibility against every published version.
//! Backward, because the topics are compacted, so values written years ago are read by
//! today's services and consumers; forward, because downstream teams upgrade on their own
//! schedule and must keep reading what a newer seatwatch writes. In practice: add a field
//! only with a default, remove only a field that has one, never change a field's type
//! (Avro's promotions, int to long and the like, excepted), add enum symbols only to an
//! enum with a default, never rename a record or enum.
//!
//! [`can_read`] applies the schema resolution rules of the Avro specification. It is our
//! own rather than apache-avro's `SchemaCompatibility` for one reason: apache-avro 0.21's
//! checker ignores a reader enum's default, so it calls every added enum symbol
//! incompatible, although the specification (and apache-avro's own decoder) resolve an
//! unknown symbol to the reader's default. Our contracts give enums defaults precisely so
//! that symbols can be added. The crate's tests hold the two checkers to the same verdict
//! on every other case they exercise. Unlike apache-avro, it also treats a change of
//! logical type (a `long` becoming `timestamp-millis`) as a change of type, and names the
//! field at fault in each problem.

use std::collections::{HashMap, HashSet};
use std::fmt;

use apache_avro::schema::{Name, ResolvedSchema, Schema};

/// Which direction of compatibility a change must keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compatibility {
    /// A reader on the new schema reads values written with the old one.
    Backward,
    /// A reader on the old schema reads values written with the new one.
    Forward,
    /// Both.
    Full,
}

impl Compatibility {
    /// The name a Confluent-compatible schema registry uses for this level when it is
    /// checked against every earlier version, as seatwatch does.
    pub fn registry_level(self) -> &'static str {
        match self {
            Compatibility::Backward => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL_TRANSITIVE",
        }
    }
}

/// The policy of every seatwatch contract, checked against every published version.
pub const POLICY: Compatibility = Compatibility::Full;

/// One reason why a reader cannot read what a writer wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where: the record name, then fields, `[]` for array items, `{}` for map values.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a new schema version breaks the policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct Incompatible {
    /// What keeps the new schema from reading old values.
    pub backward: Vec<Problem>,
    /// What keeps the old schema from reading new values.
    pub forward: Vec<Problem>,
}

impl fmt::Display for Incompatible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sections = Vec::new();
        if !self.backward.is_empty() {
            sections.push(format!(
                "not backward compatible (the new schema cannot read old values): {}",
                join(&self.backward)
            ));
        }
        if !self.forward.is_empty() {
            sections.push(format!(
                "not forward compatible (the old schema cannot read new values): {}",
                join(&self.forward)
            ));
        }
        f.write_str(&sections.join("; "))
    }
}

fn join(problems: &[Problem]) -> String {
    let parts: Vec<String> = problems.iter().map(Problem::to_string).collect();
    parts.join("; ")
}

/// Checks that `new` may follow `old` under `policy`.
pub fn check(policy: Compatibility, old: &Schema, new: &Schema) -> Result<(), Incompatible> {
    let mut found = Incompatible::default();
    if matches!(policy, Compatibility::Backward | Compatibility::Full) {
        found.backward = can_read(old, new).err().unwrap_or_default();
    }
    if matches!(policy, Compatibility::Forward | Compatibility::Full) {
        found.forward = can_read(new, old).err().unwrap_or_default();
    }
    if found.backward.is_empty() && found.forward.is_empty() {
        Ok(())
    } else {
        Err(found)
    }
}

/// Whether every value written with `writer` can be read with `reader`, by the Avro
/// specification's resolution rules; the problems found otherwise.
pub fn can_read(writer: &Schema, reader: &Schema) -> Result<(), Vec<Problem>> {
    let (writer_names, reader_names) = match (names(writer), names(reader)) {
        (Ok(w), Ok(r)) => (w, r),
        (Err(e), _) | (_, Err(e)) => {
            return Err(vec![Problem {
                path: String::new(),
                message: format!("schema does not resolve: {e}"),
            }])
        }
    };
    let mut checker = Checker {
        writer_names,
        reader_names,
        in_progress: HashSet::new(),
        problems: Vec::new(),
    };
    let path = reader
        .name()
        .map(|n| n.name.clone())
        .unwrap_or_else(|| "value".into());
    checker.check(writer, reader, &path);
    if checker.problems.is_empty() {
        Ok(())
    } else {
        Err(checker.problems)
    }
}

fn names(schema: &Schema) -> Result<HashMap<Name, &Schema>, apache_avro::Error> {
    Ok(ResolvedSchema::try_from(schema)?.get_names().clone())
}

struct Checker<'a> {
    writer_names: HashMap<Name, &'a Schema>,
    reader_names: HashMap<Name, &'a Schema>,
    /// Pairs of named types being compared, so that recursive types terminate.
    in_progress: HashSet<(String, String)>,
    problems: Vec<Problem>,
}

impl<'a> Checker<'a> {
    fn problem(&mut self, path: &str, message: String) {
        self.problems.push(Problem {
            path: path.to_string(),
            message,
        });
    }

    fn check(&mut self, writer: &'a Schema, reader: &'a Schema, path: &str) {
        let writer = deref(&self.writer_names, writer);
        let reader = deref(&self.reader_names, reader);

        // A writer union: whichever branch a value took must be readable.
        if let Schema::Union(union) = writer {
            for branch in union.variants() {
                let branch_path = format!("{path}<{}>", describe(branch));
                self.check(branch, reader, &branch_path);
            }
            return;
        }
        // A reader union: the first branch that matches the writer's type reads it.
        if let Schema::Union(union) = reader {
            let found = union
                .variants()
                .iter()
                .find(|branch| self.matches(writer, deref(&self.reader_names, branch)));
            match found {
                Some(branch) => self.check(writer, branch, path),
                None => self.problem(
                    path,
                    format!(
                        "written as {}, which no branch of the reader's {} accepts",
                        describe(writer),
                        describe(reader)
                    ),
                ),
            }
            return;
        }
        if !self.matches(writer, reader) {
            let message = match (writer.name(), reader.name()) {
                (Some(w), Some(r)) if kind(writer) == kind(reader) => format!(
                    "{} is named {} by the writer and {} by the reader (no alias)",
                    kind(writer),
                    w.name,
                    r.name
                ),
                _ => format!(
                    "written as {}, read as {}",
                    describe(writer),
                    describe(reader)
                ),
            };
            self.problem(path, message);
            return;
        }

        match (writer, reader) {
            (Schema::Record(w), Schema::Record(r)) => {
                let pair = (w.name.fullname(None), r.name.fullname(None));
                if !self.in_progress.insert(pair.clone()) {
                    return;
                }
                for field in &r.fields {
                    let field_path = format!("{path}.{}", field.name);
                    let written = w.fields.iter().find(|f| {
                        f.name == field.name || field.aliases.iter().flatten().any(|a| *a == f.name)
                    });
                    match written {
                        Some(written) => self.check(&written.schema, &field.schema, &field_path),
                        None if field.default.is_some() => {}
                        None => self.problem(
                            &field_path,
                            "the writer has no such field and the reader gives it no default"
                                .into(),
                        ),
                    }
                }
                self.in_progress.remove(&pair);
            }
            (Schema::Enum(w), Schema::Enum(r)) => {
                let unknown: Vec<&str> = w
                    .symbols
                    .iter()
                    .filter(|s| !r.symbols.contains(s))
                    .map(String::as_str)
                    .collect();
                if !unknown.is_empty() && r.default.is_none() {
                    self.problem(
                        path,
                        format!(
                            "symbols {} are written but unknown to the reader, whose enum \
                             has no default",
                            unknown.join(", ")
                        ),
                    );
                }
            }
            (Schema::Fixed(w), Schema::Fixed(r)) if w.size != r.size => self.problem(
                path,
                format!("fixed of {} bytes written, {} read", w.size, r.size),
            ),
            (Schema::Decimal(w), Schema::Decimal(r))
                if w.precision != r.precision || w.scale != r.scale =>
            {
                self.problem(
                    path,
                    format!(
                        "decimal({}, {}) written, decimal({}, {}) read",
                        w.precision, w.scale, r.precision, r.scale
                    ),
                );
            }
            (Schema::Decimal(w), Schema::Decimal(r)) => self.check(&w.inner, &r.inner, path),
            (Schema::Array(w), Schema::Array(r)) => {
                self.check(&w.items, &r.items, &format!("{path}[]"));
            }
            (Schema::Map(w), Schema::Map(r)) => {
                self.check(&w.types, &r.types, &format!("{path}{{}}"));
            }
            _ => {}
        }
    }

    /// The specification's shallow match: same type (and name, for named types), or a
    /// promotion the reader performs.
    fn matches(&self, writer: &Schema, reader: &Schema) -> bool {
        let writer = deref(&self.writer_names, writer);
        let reader = deref(&self.reader_names, reader);
        let (w, r) = (kind(writer), kind(reader));
        if w != r {
            return matches!(
                (w, r),
                ("int", "long" | "float" | "double")
                    | ("long", "float" | "double")
                    | ("float", "double")
                    | ("string", "bytes")
                    | ("bytes", "string")
            );
        }
        match (writer.name(), reader.name()) {
            (Some(w), Some(r)) => w.name == r.name || aliases(reader).any(|a| a == w.name),
            _ => true,
        }
    }
}

/// Follows a reference to the named type it stands for.
fn deref<'a>(names: &HashMap<Name, &'a Schema>, schema: &'a Schema) -> &'a Schema {
    match schema {
        Schema::Ref { name } => names.get(name).copied().unwrap_or(schema),
        _ => schema,
    }
}

fn aliases(schema: &Schema) -> impl Iterator<Item = String> + '_ {
    let list = match schema {
        Schema::Record(r) => r.aliases.as_ref(),
        Schema::Enum(e) => e.aliases.as_ref(),
        Schema::Fixed(f) => f.aliases.as_ref(),
        _ => None,
    };
    list.into_iter().flatten().map(|alias| alias.name())
}

/// The type of a schema as the specification names it, logical types included.
fn kind(schema: &Schema) -> &'static str {
    match schema {
        Schema::Null => "null",
        Schema::Boolean => "boolean",
        Schema::Int => "int",
        Schema::Long => "long",
        Schema::Float => "float",
        Schema::Double => "double",
        Schema::Bytes => "bytes",
        Schema::String => "string",
        Schema::Array(_) => "array",
        Schema::Map(_) => "map",
        Schema::Union(_) => "union",
        Schema::Record(_) => "record",
        Schema::Enum(_) => "enum",
        Schema::Fixed(_) => "fixed",
        Schema::Decimal(_) => "decimal",
        Schema::BigDecimal => "big-decimal",
        Schema::Uuid => "uuid",
        Schema::Date => "date",
        Schema::TimeMillis => "time-millis",
        Schema::TimeMicros => "time-micros",
        Schema::TimestampMillis => "timestamp-millis",
        Schema::TimestampMicros => "timestamp-micros",
        Schema::TimestampNanos => "timestamp-nanos",
        Schema::LocalTimestampMillis => "local-timestamp-millis",
        Schema::LocalTimestampMicros => "local-timestamp-micros",
        Schema::LocalTimestampNanos => "local-timestamp-nanos",
        Schema::Duration => "duration",
        Schema::Ref { .. } => "reference",
    }
}

/// A short description of a schema for messages: `long`, `enum Severity`, `[null, long]`.
fn describe(schema: &Schema) -> String {
    match schema {
        Schema::Union(union) => {
            let branches: Vec<String> = union.variants().iter().map(describe).collect();
            format!("[{}]", branches.join(", "))
        }
        Schema::Array(array) => format!("array of {}", describe(&array.items)),
        Schema::Map(map) => format!("map of {}", describe(&map.types)),
        Schema::Ref { name } => name.name.clone(),
        other => match other.name() {
            Some(name) => format!("{} {}", kind(other), name.name),
            None => kind(other).to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(json: &str) -> Schema {
        Schema::parse_str(json).unwrap()
    }

    #[test]
    fn promotions_follow_the_specification() {
        let int = schema(r#""int""#);
        let long = schema(r#""long""#);
        assert!(can_read(&int, &long).is_ok());
        assert!(can_read(&long, &int).is_err());
        assert!(check(Compatibility::Backward, &int, &long).is_ok());
        assert!(check(Compatibility::Full, &int, &long).is_err());
    }

    #[test]
    fn a_logical_type_change_is_a_type_change() {
        let millis = schema(r#"{"type":"long","logicalType":"timestamp-millis"}"#);
        let micros = schema(r#"{"type":"long","logicalType":"timestamp-micros"}"#);
        let err = can_read(&millis, &micros).unwrap_err();
        assert!(err[0].message.contains("timestamp-millis"), "{err:?}");
    }

    #[test]
    fn union_branches_are_checked_one_by_one() {
        let nullable_long = schema(r#"["null","long"]"#);
        let nullable_string = schema(r#"["null","string"]"#);
        let err = can_read(&nullable_long, &nullable_string).unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(err[0].path.contains("<long>"), "{err:?}");
        assert!(can_read(&schema(r#""long""#), &nullable_long).is_ok());
        assert!(can_read(&nullable_long, &schema(r#""long""#)).is_err());
    }

    #[test]
    fn recursive_records_terminate() {
        let list = schema(
            r#"{"type":"record","name":"Node","fields":[
                {"name":"next","type":["null","Node"]}
            ]}"#,
        );
        assert!(can_read(&list, &list).is_ok());
    }
}
