//! Runs a checked plan over a view of the org and shapes the result as REST JSON records.
//!
//! Comparison rules follow SOQL: text compares without regard to case, ids compare exactly,
//! a null field matches only `= null` (and every `!=` / `NOT IN` with a value), and nulls
//! sort first ascending and last descending unless NULLS FIRST/LAST says otherwise. Rows
//! without ORDER BY come in storage order. Records carry `attributes` at every level, fields
//! in the order selected and under canonical names, and a null lookup as a JSON null.

use std::cmp::Ordering;

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::lexer::CmpOp;
use super::{Cond, FieldPath, Operand, Plan, SelectNode, SelectTree};
use crate::view::{Row, Value, View};

/// One result record, ready to serialise.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRecord {
    /// `attributes.type`.
    pub sobject: &'static str,
    /// `attributes.url`.
    pub url: String,
    /// Selected fields and relationships, in order.
    pub fields: Vec<(&'static str, OutValue)>,
}

/// A value in a result record.
#[derive(Debug, Clone, PartialEq)]
pub enum OutValue {
    /// A scalar (or null).
    Json(serde_json::Value),
    /// A related record.
    Record(Box<OutRecord>),
}

impl Serialize for OutRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.fields.len() + 1))?;
        let attributes = serde_json::json!({ "type": self.sobject, "url": self.url });
        map.serialize_entry("attributes", &attributes)?;
        for (name, value) in &self.fields {
            match value {
                OutValue::Json(v) => map.serialize_entry(name, v)?,
                OutValue::Record(r) => map.serialize_entry(name, r.as_ref())?,
            }
        }
        map.end()
    }
}

/// Runs a plan: filter, sort, limit, then shape each row. `version` (like `v62.0`) goes into
/// the `attributes.url` of every record.
pub fn execute(plan: &Plan, view: &View<'_>, version: &str) -> Vec<OutRecord> {
    // Filter, keeping the sort key values next to each row so they are read once.
    let mut rows: Vec<(Row<'_>, Vec<Value>)> = view
        .rows(plan.object.kind)
        .into_iter()
        .filter(|row| plan.filter.as_ref().is_none_or(|c| eval(c, view, *row)))
        .map(|row| {
            let keys = plan
                .order
                .iter()
                .map(|k| path_value(view, row, &k.path))
                .collect();
            (row, keys)
        })
        .collect();

    // A stable sort keeps storage order among equal keys.
    if !plan.order.is_empty() {
        rows.sort_by(|(_, a), (_, b)| {
            plan.order
                .iter()
                .zip(a.iter().zip(b))
                .map(|(key, (x, y))| sort_order(x, y, key.descending, key.nulls_last))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
    }
    if let Some(limit) = plan.limit {
        rows.truncate(limit);
    }
    rows.into_iter()
        .map(|(row, _)| project(view, row, &plan.select, version))
        .collect()
}

/// The value at the end of a path; null when a relationship on the way is empty.
fn path_value<'a>(view: &View<'a>, row: Row<'a>, path: &FieldPath) -> Value {
    let mut current = row;
    for rel in &path.rels {
        match view.follow(current, rel) {
            Some(next) => current = next,
            None => return Value::Null,
        }
    }
    view.value(current, path.field.name)
}

fn eval<'a>(cond: &Cond, view: &View<'a>, row: Row<'a>) -> bool {
    match cond {
        Cond::And(parts) => parts.iter().all(|c| eval(c, view, row)),
        Cond::Or(parts) => parts.iter().any(|c| eval(c, view, row)),
        Cond::Not(inner) => !eval(inner, view, row),
        Cond::Cmp { path, op, operand } => {
            let value = path_value(view, row, path);
            matches_op(&value, *op, operand)
        }
        Cond::In {
            path,
            negated,
            operands,
        } => {
            let value = path_value(view, row, path);
            let found = operands.iter().any(|o| matches_op(&value, CmpOp::Eq, o));
            found != *negated
        }
    }
}

/// Applies one comparison operator.
fn matches_op(value: &Value, op: CmpOp, operand: &Operand) -> bool {
    let equal = match (value, operand) {
        (Value::Null, Operand::Null) => true,
        (Value::Null, _) | (_, Operand::Null) => false,
        _ => compare(value, operand) == Some(Ordering::Equal),
    };
    match op {
        CmpOp::Eq => equal,
        CmpOp::Ne => !equal,
        CmpOp::Lt => compare(value, operand) == Some(Ordering::Less),
        CmpOp::Le => compare(value, operand).is_some_and(|o| o.is_le()),
        CmpOp::Gt => compare(value, operand) == Some(Ordering::Greater),
        CmpOp::Ge => compare(value, operand).is_some_and(|o| o.is_ge()),
    }
}

/// Orders a field value against a literal; `None` when either is null or the types differ.
fn compare(value: &Value, operand: &Operand) -> Option<Ordering> {
    match (value, operand) {
        (Value::Text(a), Operand::Text(b)) => Some(fold(a).cmp(&fold(b))),
        (Value::Id(a), Operand::Id(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Operand::Bool(b)) => Some(a.cmp(b)),
        (Value::Int(a), Operand::Num(b)) => (*a as f64).partial_cmp(b),
        (Value::DateTime(a), Operand::DateTime(b)) => Some(a.cmp(b)),
        (Value::Date(a), Operand::Date(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// Orders two values of the same field for ORDER BY.
fn sort_order(a: &Value, b: &Value, descending: bool, nulls_last: bool) -> Ordering {
    let by_value = match (a, b) {
        (Value::Null, Value::Null) => return Ordering::Equal,
        (Value::Null, _) => {
            return if nulls_last {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (_, Value::Null) => {
            return if nulls_last {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (Value::Text(x), Value::Text(y)) => fold(x).cmp(&fold(y)),
        (Value::Id(x), Value::Id(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::DateTime(x), Value::DateTime(y)) => x.cmp(y),
        (Value::Date(x), Value::Date(y)) => x.cmp(y),
        _ => Ordering::Equal,
    };
    if descending {
        by_value.reverse()
    } else {
        by_value
    }
}

/// Text as compared by SOQL: without regard to case.
fn fold(s: &str) -> String {
    s.to_lowercase()
}

/// Shapes one row as a REST record.
fn project<'a>(view: &View<'a>, row: Row<'a>, tree: &SelectTree, version: &str) -> OutRecord {
    let fields = tree
        .nodes
        .iter()
        .map(|node| match node {
            SelectNode::Field(field) => (
                field.name,
                OutValue::Json(view.value(row, field.name).to_json()),
            ),
            SelectNode::Rel(rel, sub) => {
                let value = match view.follow(row, rel) {
                    Some(related) => {
                        OutValue::Record(Box::new(project(view, related, sub, version)))
                    }
                    None => OutValue::Json(serde_json::Value::Null),
                };
                (rel.name, value)
            }
        })
        .collect();
    OutRecord {
        sobject: tree.object.name,
        url: format!(
            "/services/data/{version}/sobjects/{}/{}",
            tree.object.name,
            row.id()
        ),
        fields,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::org::builtin::built_in;
    use crate::soql::compile;

    fn run(src: &str) -> Vec<serde_json::Value> {
        let now = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let org = built_in(200, now, "integration@lakeside-freight.example");
        let view = View::new(&org, now);
        let plan = compile(src, &BTreeSet::new()).unwrap();
        let records = execute(&plan, &view, "v62.0");
        records
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect()
    }

    #[test]
    fn nests_relationships_with_attributes() {
        let records = run(
            "SELECT Id, Profile.Name, Profile.UserLicense.LicenseDefinitionKey, Manager.Username \
             FROM User WHERE Username = 'INTEGRATION@lakeside-freight.example'",
        );
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r["attributes"]["type"], "User");
        assert_eq!(r["Profile"]["attributes"]["type"], "Profile");
        assert_eq!(r["Profile"]["Name"], "System Administrator");
        assert_eq!(
            r["Profile"]["UserLicense"]["attributes"]["type"],
            "UserLicense"
        );
        assert_eq!(r["Profile"]["UserLicense"]["LicenseDefinitionKey"], "SFDC");
        assert!(r.get("Manager").is_some_and(|m| m.is_null()));
    }

    #[test]
    fn filters_sorts_and_limits() {
        let records = run(
            "SELECT Id, LastLoginDate FROM User WHERE IsActive = true AND LastLoginDate != null \
             ORDER BY LastLoginDate DESC LIMIT 5",
        );
        assert_eq!(records.len(), 5);
        let dates: Vec<&str> = records
            .iter()
            .map(|r| r["LastLoginDate"].as_str().unwrap())
            .collect();
        assert!(dates.windows(2).all(|w| w[0] >= w[1]));

        let nulls_first = run("SELECT Id, LastLoginDate FROM User ORDER BY LastLoginDate");
        assert!(nulls_first[0]["LastLoginDate"].is_null());
        let in_list =
            run("SELECT Id FROM UserLicense WHERE LicenseDefinitionKey IN ('sfdc','AUL')");
        assert_eq!(in_list.len(), 2);
    }
}
