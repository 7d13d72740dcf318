//! SOQL: from query text to a checked plan, and from a plan to JSON records.
//!
//! [`compile`] lexes, parses and resolves a query against the schema, producing either a
//! [`Plan`] or a [`SoqlError`] carrying the Salesforce error code and a message shaped like
//! Salesforce's (`\n<query>\n<caret>\nERROR at Row:r:Column:c\n<detail>`). [`exec::execute`]
//! runs a plan over a view of the org. Pagination and HTTP are the http module's business.

pub mod exec;
pub mod lexer;
pub mod parser;

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};

use crate::ids;
use crate::schema::{self, FieldDef, FieldType, ObjectDef, RelDef};
use lexer::{CmpOp, Tok, Token};
use parser::{Expr, Lit, LitAst, PathAst, QueryAst};

/// A query Salesforce would refuse, with the error code and message it would send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoqlError {
    /// `MALFORMED_QUERY`, `INVALID_TYPE`, `INVALID_FIELD` or `INVALID_QUERY_FILTER_OPERATOR`.
    pub code: &'static str,
    /// The full message.
    pub message: String,
}

/// A checked query, ready to run.
#[derive(Debug)]
pub struct Plan {
    /// The object queried.
    pub object: &'static ObjectDef,
    /// What each record carries, as a tree of relationships.
    pub select: SelectTree,
    /// The WHERE condition.
    pub filter: Option<Cond>,
    /// ORDER BY keys.
    pub order: Vec<OrderKey>,
    /// LIMIT.
    pub limit: Option<usize>,
}

/// A field reached through zero or more relationships.
#[derive(Debug, Clone)]
pub struct FieldPath {
    /// Relationships followed, in order.
    pub rels: Vec<&'static RelDef>,
    /// The field read at the end.
    pub field: &'static FieldDef,
}

/// The selected fields of one object and the relationships selected through it.
#[derive(Debug)]
pub struct SelectTree {
    /// The object.
    pub object: &'static ObjectDef,
    /// Fields and relationships, in the order first selected.
    pub nodes: Vec<SelectNode>,
}

/// One entry of a [`SelectTree`].
#[derive(Debug)]
pub enum SelectNode {
    /// A field of this object.
    Field(&'static FieldDef),
    /// A relationship and what is selected through it.
    Rel(&'static RelDef, SelectTree),
}

/// A checked WHERE condition.
#[derive(Debug)]
pub enum Cond {
    /// All must hold.
    And(Vec<Cond>),
    /// One must hold.
    Or(Vec<Cond>),
    /// Must not hold.
    Not(Box<Cond>),
    /// A comparison.
    Cmp {
        /// The field.
        path: FieldPath,
        /// The operator.
        op: CmpOp,
        /// The literal, converted to the field's type.
        operand: Operand,
    },
    /// IN or NOT IN.
    In {
        /// The field.
        path: FieldPath,
        /// NOT IN.
        negated: bool,
        /// The literals, converted to the field's type.
        operands: Vec<Operand>,
    },
}

/// A literal converted to the type of the field it is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// NULL.
    Null,
    /// Text or picklist.
    Text(String),
    /// An 18-character id.
    Id(String),
    /// Boolean.
    Bool(bool),
    /// Number.
    Num(f64),
    /// DateTime.
    DateTime(DateTime<Utc>),
    /// Date.
    Date(NaiveDate),
}

/// One ORDER BY key.
#[derive(Debug)]
pub struct OrderKey {
    /// The field.
    pub path: FieldPath,
    /// DESC.
    pub descending: bool,
    /// Whether nulls sort after values (default: last when descending, first otherwise).
    pub nulls_last: bool,
}

/// Turns query text into a plan. Objects in `denied_objects` are refused with INVALID_TYPE,
/// as Salesforce does for objects the user has no permission on.
pub fn compile(src: &str, denied_objects: &BTreeSet<String>) -> Result<Plan, SoqlError> {
    let tokens = match lexer::lex(src) {
        Ok(tokens) => tokens,
        Err((partial, e)) => {
            let (row, col) = row_col(src, e.pos);
            let detail = format!("line {row}:{col} {}", e.message);
            let message = render(src, e.pos, object_pos(&partial), &detail);
            return Err(SoqlError {
                code: "MALFORMED_QUERY",
                message,
            });
        }
    };
    let ast = parser::parse(&tokens).map_err(|e| SoqlError {
        code: "MALFORMED_QUERY",
        message: render(src, e.pos, object_pos(&tokens), &e.message),
    })?;
    Resolver {
        src,
        object_pos: ast.object_pos,
    }
    .plan(&ast, denied_objects)
}

/// Where the object name follows FROM, if the tokens got that far.
fn object_pos(tokens: &[Token]) -> Option<usize> {
    tokens
        .windows(2)
        .find_map(|pair| match (&pair[0], &pair[1].tok) {
            (from, Tok::Ident(_)) if from.is_keyword("FROM") => Some(pair[1].pos),
            _ => None,
        })
}

/// Row and column (both from 1) of a character offset.
fn row_col(src: &str, pos: usize) -> (usize, usize) {
    let before: Vec<char> = src.chars().take(pos).collect();
    let row = 1 + before.iter().filter(|&&c| c == '\n').count();
    let line_start = before.iter().rposition(|&c| c == '\n').map_or(0, |i| i + 1);
    (row, pos - line_start + 1)
}

/// Builds a Salesforce-shaped error message: the query line with a caret under the error.
/// When the error lies after the object name, the line shown starts at the object name (the
/// recorded MALFORMED_QUERY response does this); otherwise it is the whole line.
fn render(src: &str, pos: usize, object_pos: Option<usize>, detail: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let (row, col) = row_col(src, pos);
    let line_start = pos + 1 - col;
    let start = match object_pos {
        Some(object) if object > line_start && object < pos => object,
        _ => line_start,
    };
    let end = chars[start..]
        .iter()
        .position(|&c| c == '\n')
        .map_or(chars.len(), |i| start + i);
    let shown: String = chars[start..end].iter().collect();
    let caret = " ".repeat(pos - start);
    format!("\n{shown}\n{caret}^\nERROR at Row:{row}:Column:{col}\n{detail}")
}

/// Resolves names against the schema and checks literal types.
struct Resolver<'s> {
    src: &'s str,
    object_pos: usize,
}

impl Resolver<'_> {
    fn error(&self, code: &'static str, pos: usize, detail: &str) -> SoqlError {
        SoqlError {
            code,
            message: render(self.src, pos, Some(self.object_pos), detail),
        }
    }

    fn plan(&self, ast: &QueryAst, denied: &BTreeSet<String>) -> Result<Plan, SoqlError> {
        // The object first: nothing else can be checked without it.
        let object = schema::object_by_name(&ast.object)
            .filter(|o| !denied.iter().any(|d| d.eq_ignore_ascii_case(o.name)))
            .ok_or_else(|| {
                let detail = format!(
                    "sObject type '{}' is not supported. If you are attempting to use a custom \
                     object, be sure to append the '__c' after the entity name. Please \
                     reference your WSDL or the describe call for the appropriate names.",
                    ast.object
                );
                self.error("INVALID_TYPE", ast.object_pos, &detail)
            })?;

        // Then the selected fields, the condition and the sort keys, in query order.
        let mut select = SelectTree {
            object,
            nodes: Vec::new(),
        };
        let mut seen = BTreeSet::new();
        for path_ast in &ast.fields {
            let path = self.path(object, path_ast)?;
            if !seen.insert(canonical(&path)) {
                let detail = format!("duplicate field selected: {}", canonical(&path));
                return Err(self.error("MALFORMED_QUERY", path_ast.pos, &detail));
            }
            insert(&mut select, &path.rels, path.field);
        }
        let filter = ast
            .filter
            .as_ref()
            .map(|e| self.cond(object, e))
            .transpose()?;
        let mut order = Vec::new();
        for item in &ast.order {
            let path = self.path(object, &item.path)?;
            self.check_filterable(&path, &item.path, "sorted")?;
            let nulls_last = item.nulls_last.unwrap_or(item.descending);
            order.push(OrderKey {
                path,
                descending: item.descending,
                nulls_last,
            });
        }
        let limit = ast.limit.map(|n| n as usize);
        Ok(Plan {
            object,
            select,
            filter,
            order,
            limit,
        })
    }

    fn path(&self, object: &'static ObjectDef, ast: &PathAst) -> Result<FieldPath, SoqlError> {
        let (field_name, rel_names) = ast.parts.split_last().unwrap_or((&ast.parts[0], &[]));
        let mut current = object;
        let mut rels = Vec::new();
        for name in rel_names {
            let rel = current.relationship(name).ok_or_else(|| {
                let detail = format!(
                    "Didn't understand relationship '{name}' in field path. If you are \
                     attempting to use a custom relationship, be sure to append the '__r' after \
                     the custom relationship name. Please reference your WSDL or the describe \
                     call for the appropriate names."
                );
                self.error("INVALID_FIELD", ast.pos, &detail)
            })?;
            rels.push(rel);
            current = schema::object(rel.target);
        }
        let field = current.field(field_name).ok_or_else(|| {
            let detail = format!(
                "No such column '{field_name}' on entity '{}'. If you are attempting to use a \
                 custom field, be sure to append the '__c' after the custom field name. Please \
                 reference your WSDL or the describe call for the appropriate names.",
                current.name
            );
            self.error("INVALID_FIELD", ast.pos, &detail)
        })?;
        Ok(FieldPath { rels, field })
    }

    fn check_filterable(
        &self,
        path: &FieldPath,
        ast: &PathAst,
        verb: &str,
    ) -> Result<(), SoqlError> {
        if path.field.filterable {
            return Ok(());
        }
        let detail = format!(
            "field '{}' can not be {verb} in a query call",
            path.field.name
        );
        Err(self.error("INVALID_FIELD", ast.pos, &detail))
    }

    fn cond(&self, object: &'static ObjectDef, expr: &Expr) -> Result<Cond, SoqlError> {
        let all = |parts: &[Expr]| -> Result<Vec<Cond>, SoqlError> {
            parts.iter().map(|p| self.cond(object, p)).collect()
        };
        Ok(match expr {
            Expr::And(parts) => Cond::And(all(parts)?),
            Expr::Or(parts) => Cond::Or(all(parts)?),
            Expr::Not(inner) => Cond::Not(Box::new(self.cond(object, inner)?)),
            Expr::Cmp { path, op, lit } => {
                let resolved = self.path(object, path)?;
                self.check_filterable(&resolved, path, "filtered")?;
                let operand = self.operand(&resolved, lit)?;
                Cond::Cmp {
                    path: resolved,
                    op: *op,
                    operand,
                }
            }
            Expr::In {
                path,
                negated,
                lits,
            } => {
                let resolved = self.path(object, path)?;
                self.check_filterable(&resolved, path, "filtered")?;
                let operands = lits
                    .iter()
                    .map(|l| self.operand(&resolved, l))
                    .collect::<Result<_, _>>()?;
                Cond::In {
                    path: resolved,
                    negated: *negated,
                    operands,
                }
            }
        })
    }

    /// Converts a literal to the field's type, refusing literals of another type.
    fn operand(&self, path: &FieldPath, lit: &LitAst) -> Result<Operand, SoqlError> {
        let field = path.field;
        let operand = match (field.ty, &lit.value) {
            (_, Lit::Null) => Some(Operand::Null),
            (FieldType::Id | FieldType::Reference, Lit::Str(s)) => {
                let id = ids::to_18(s).ok_or_else(|| {
                    let detail = format!("invalid ID field: {s}");
                    self.error("INVALID_QUERY_FILTER_OPERATOR", lit.pos, &detail)
                })?;
                Some(Operand::Id(id))
            }
            (FieldType::Text | FieldType::Picklist, Lit::Str(s)) => Some(Operand::Text(s.clone())),
            (FieldType::Boolean, Lit::Bool(b)) => Some(Operand::Bool(*b)),
            (FieldType::Int, Lit::Num(n)) => Some(Operand::Num(*n)),
            (FieldType::DateTime, Lit::DateTime(at)) => Some(Operand::DateTime(*at)),
            (FieldType::Date, Lit::Date(day)) => Some(Operand::Date(*day)),
            _ => None,
        };
        operand.ok_or_else(|| {
            let quoting = match field.ty {
                FieldType::Id | FieldType::Reference | FieldType::Text | FieldType::Picklist => {
                    "should be enclosed in quotes"
                }
                _ => "should not be enclosed in quotes",
            };
            let detail = format!(
                "value of filter criterion for field '{}' must be of type {} and {quoting}",
                field.name,
                field.ty.soap_name()
            );
            self.error("INVALID_FIELD", lit.pos, &detail)
        })
    }
}

/// The canonical dotted name of a path, for duplicate detection.
fn canonical(path: &FieldPath) -> String {
    let mut parts: Vec<&str> = path.rels.iter().map(|r| r.name).collect();
    parts.push(path.field.name);
    parts.join(".")
}

/// Adds a selected path to the tree, sharing relationship nodes between paths.
fn insert(tree: &mut SelectTree, rels: &[&'static RelDef], field: &'static FieldDef) {
    let Some((rel, rest)) = rels.split_first() else {
        tree.nodes.push(SelectNode::Field(field));
        return;
    };
    let existing = tree
        .nodes
        .iter()
        .position(|n| matches!(n, SelectNode::Rel(r, _) if r.name == rel.name));
    let index = existing.unwrap_or_else(|| {
        let subtree = SelectTree {
            object: schema::object(rel.target),
            nodes: Vec::new(),
        };
        tree.nodes.push(SelectNode::Rel(rel, subtree));
        tree.nodes.len() - 1
    });
    if let SelectNode::Rel(_, subtree) = &mut tree.nodes[index] {
        insert(subtree, rest, field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> SoqlError {
        compile(src, &BTreeSet::new()).unwrap_err()
    }

    #[test]
    fn messages_match_the_recorded_shapes() {
        let e = err("SELECT Id, UsedSeats FROM UserLicense");
        assert_eq!(e.code, "INVALID_FIELD");
        assert!(e.message.starts_with(
            "\nSELECT Id, UsedSeats FROM UserLicense\n           ^\nERROR at Row:1:Column:12\n"
        ));

        let e =
            err("SELECT Id, Email FROM User WHERE SystemModstamp > 2024-05-01T12:34:56.000 0000");
        assert_eq!(e.code, "MALFORMED_QUERY");
        assert!(e
            .message
            .starts_with("\nUser WHERE SystemModstamp > 2024-05-01T12:34:56.000 0000\n"));
        assert!(e.message.ends_with(
            "ERROR at Row:1:Column:74\nline 1:74 no viable alternative at character ' '"
        ));

        let e = err("SELECT Id FROM Widget");
        assert_eq!(e.code, "INVALID_TYPE");
        assert!(e
            .message
            .contains("sObject type 'Widget' is not supported."));
    }

    #[test]
    fn checks_filterability_types_and_relationships() {
        let e = err("SELECT Id FROM LoginHistory WHERE Status = 'Success'");
        assert_eq!(e.code, "INVALID_FIELD");
        assert!(e
            .message
            .ends_with("field 'Status' can not be filtered in a query call"));

        let e = err("SELECT Id FROM User WHERE SystemModstamp > '2024-05-01'");
        assert_eq!(e.code, "INVALID_FIELD");
        assert!(e
            .message
            .contains("must be of type dateTime and should not be enclosed"));

        let e = err("SELECT Id FROM User WHERE SystemModstamp > 2024-05-01");
        assert_eq!(e.code, "INVALID_FIELD");

        let e = err("SELECT Id FROM User WHERE Id = 'nope'");
        assert_eq!(e.code, "INVALID_QUERY_FILTER_OPERATOR");

        let e = err("SELECT Profile.Nope.Name FROM User");
        assert!(e.message.contains("Didn't understand relationship 'Nope'"));

        let e = err("SELECT Id, id FROM User");
        assert_eq!(e.code, "MALFORMED_QUERY");
    }

    #[test]
    fn shares_relationship_nodes_between_paths() {
        let plan = compile(
            "SELECT profile.name, Profile.UserLicense.Name, Id FROM user",
            &BTreeSet::new(),
        )
        .unwrap();
        assert_eq!(plan.object.name, "User");
        assert_eq!(plan.select.nodes.len(), 2);
        let SelectNode::Rel(rel, sub) = &plan.select.nodes[0] else {
            panic!()
        };
        assert_eq!(rel.name, "Profile");
        assert_eq!(sub.nodes.len(), 2);
    }

    #[test]
    fn denied_objects_read_as_unknown() {
        let denied = BTreeSet::from(["LoginHistory".to_owned()]);
        let e = compile("SELECT Id FROM LoginHistory", &denied).unwrap_err();
        assert_eq!(e.code, "INVALID_TYPE");
    }
}
