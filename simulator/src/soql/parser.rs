//! Recursive-descent parser for the SOQL subset the simulator understands.
//!
//! Grammar (keywords case-insensitive):
//!
//! ```text
//! query     := SELECT path (',' path)* FROM name [WHERE condition]
//!              [ORDER BY order (',' order)*] [LIMIT integer] EOF
//! path      := name ('.' name)*
//! condition := unary (AND unary)* | unary (OR unary)*     -- mixing needs parentheses
//! unary     := NOT unary | '(' condition ')' | path op literal
//!            | path [NOT] IN '(' literal (',' literal)* ')'
//! order     := path [ASC | DESC] [NULLS (FIRST | LAST)]
//! literal   := 'string' | number | date | dateTime | TRUE | FALSE | NULL
//! ```
//!
//! Anything else (functions, subqueries, LIKE, GROUP BY, OFFSET, date literals such as
//! TODAY…) is refused as `unexpected token`, never skipped. Names are only checked against the
//! schema later, by the resolver.

use chrono::{DateTime, NaiveDate, Utc};

use super::lexer::{CmpOp, Tok, Token};

/// A parsed query, names as written.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryAst {
    /// Selected paths.
    pub fields: Vec<PathAst>,
    /// The object name as written.
    pub object: String,
    /// Where the object name starts.
    pub object_pos: usize,
    /// The WHERE condition.
    pub filter: Option<Expr>,
    /// ORDER BY items.
    pub order: Vec<OrderAst>,
    /// LIMIT.
    pub limit: Option<u64>,
}

/// A dotted field path, for example `Profile.UserLicense.Name`.
#[derive(Debug, Clone, PartialEq)]
pub struct PathAst {
    /// Its parts as written.
    pub parts: Vec<String>,
    /// Where it starts.
    pub pos: usize,
}

/// A WHERE condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// All must hold.
    And(Vec<Expr>),
    /// One must hold.
    Or(Vec<Expr>),
    /// Must not hold.
    Not(Box<Expr>),
    /// `path op literal`.
    Cmp {
        /// The field.
        path: PathAst,
        /// The operator.
        op: CmpOp,
        /// The literal.
        lit: LitAst,
    },
    /// `path [NOT] IN (literals)`.
    In {
        /// The field.
        path: PathAst,
        /// NOT IN.
        negated: bool,
        /// The literals.
        lits: Vec<LitAst>,
    },
}

/// A literal with where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct LitAst {
    /// The value.
    pub value: Lit,
    /// Where it starts.
    pub pos: usize,
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// NULL.
    Null,
    /// TRUE or FALSE.
    Bool(bool),
    /// 'text'.
    Str(String),
    /// A number.
    Num(f64),
    /// A date.
    Date(NaiveDate),
    /// A dateTime.
    DateTime(DateTime<Utc>),
}

/// One ORDER BY item.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderAst {
    /// The field.
    pub path: PathAst,
    /// DESC.
    pub descending: bool,
    /// NULLS LAST (`Some(true)`) or NULLS FIRST (`Some(false)`), if written.
    pub nulls_last: Option<bool>,
}

/// A token the grammar does not allow where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// Where the token starts.
    pub pos: usize,
    /// What went wrong.
    pub message: String,
}

/// Words that cannot be field or object names.
const RESERVED: &[&str] = &[
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "ORDER", "BY", "LIMIT", "NULL", "TRUE",
    "FALSE", "GROUP", "HAVING", "OFFSET", "LIKE", "WITH", "USING", "INCLUDES", "EXCLUDES",
];

/// Parses a token list ending with `Eof`.
pub fn parse(tokens: &[Token]) -> Result<QueryAst, ParseError> {
    Parser { tokens, at: 0 }.query()
}

struct Parser<'t> {
    tokens: &'t [Token],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> &Token {
        let token = &self.tokens[self.at.min(self.tokens.len() - 1)];
        self.at += 1;
        token
    }

    fn unexpected(&self) -> ParseError {
        let token = self.peek();
        ParseError {
            pos: token.pos,
            message: format!("unexpected token: '{}'", token.text),
        }
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.peek().is_keyword(keyword);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), ParseError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn expect(&mut self, tok: &Tok) -> Result<(), ParseError> {
        if &self.peek().tok == tok {
            self.at += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn query(&mut self) -> Result<QueryAst, ParseError> {
        self.expect_keyword("SELECT")?;
        let mut fields = vec![self.path()?];
        while self.peek().tok == Tok::Comma {
            self.at += 1;
            fields.push(self.path()?);
        }

        self.expect_keyword("FROM")?;
        let (object, object_pos) = self.name()?;

        let filter = if self.eat_keyword("WHERE") {
            Some(self.condition()?)
        } else {
            None
        };
        let mut order = Vec::new();
        if self.eat_keyword("ORDER") {
            self.expect_keyword("BY")?;
            order.push(self.order_item()?);
            while self.peek().tok == Tok::Comma {
                self.at += 1;
                order.push(self.order_item()?);
            }
        }
        let limit = if self.eat_keyword("LIMIT") {
            Some(self.limit()?)
        } else {
            None
        };

        self.expect(&Tok::Eof)?;
        Ok(QueryAst {
            fields,
            object,
            object_pos,
            filter,
            order,
            limit,
        })
    }

    /// A name that is not a reserved word.
    fn name(&mut self) -> Result<(String, usize), ParseError> {
        let token = self.peek();
        match &token.tok {
            Tok::Ident(name) if !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) => {
                let found = (name.clone(), token.pos);
                self.at += 1;
                Ok(found)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn path(&mut self) -> Result<PathAst, ParseError> {
        let (first, pos) = self.name()?;
        let mut parts = vec![first];
        while self.peek().tok == Tok::Dot {
            self.at += 1;
            parts.push(self.name()?.0);
        }
        Ok(PathAst { parts, pos })
    }

    /// Conditions joined by one kind of connective; a different one needs parentheses.
    fn condition(&mut self) -> Result<Expr, ParseError> {
        let first = self.unary()?;
        let joiner = if self.peek().is_keyword("AND") {
            "AND"
        } else if self.peek().is_keyword("OR") {
            "OR"
        } else {
            return Ok(first);
        };
        let mut parts = vec![first];
        while self.eat_keyword(joiner) {
            parts.push(self.unary()?);
        }
        if self.peek().is_keyword("AND") || self.peek().is_keyword("OR") {
            return Err(self.unexpected());
        }
        Ok(if joiner == "AND" {
            Expr::And(parts)
        } else {
            Expr::Or(parts)
        })
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat_keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek().tok == Tok::LParen {
            self.at += 1;
            let inner = self.condition()?;
            self.expect(&Tok::RParen)?;
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let path = self.path()?;
        if let Tok::Op(op) = self.peek().tok {
            self.at += 1;
            let lit = self.literal()?;
            return Ok(Expr::Cmp { path, op, lit });
        }
        let negated = self.eat_keyword("NOT");
        self.expect_keyword("IN")?;
        self.expect(&Tok::LParen)?;
        let mut lits = vec![self.literal()?];
        while self.peek().tok == Tok::Comma {
            self.at += 1;
            lits.push(self.literal()?);
        }
        self.expect(&Tok::RParen)?;
        Ok(Expr::In {
            path,
            negated,
            lits,
        })
    }

    fn literal(&mut self) -> Result<LitAst, ParseError> {
        let token = self.peek();
        let value = match &token.tok {
            Tok::Str(s) => Lit::Str(s.clone()),
            Tok::Num(n) => Lit::Num(*n),
            Tok::Date(d) => Lit::Date(*d),
            Tok::DateTime(at) => Lit::DateTime(*at),
            _ if token.is_keyword("NULL") => Lit::Null,
            _ if token.is_keyword("TRUE") => Lit::Bool(true),
            _ if token.is_keyword("FALSE") => Lit::Bool(false),
            _ => return Err(self.unexpected()),
        };
        let pos = token.pos;
        self.at += 1;
        Ok(LitAst { value, pos })
    }

    fn order_item(&mut self) -> Result<OrderAst, ParseError> {
        let path = self.path()?;
        let descending = if self.eat_keyword("DESC") {
            true
        } else {
            self.eat_keyword("ASC");
            false
        };
        let nulls_last = if self.eat_keyword("NULLS") {
            if self.eat_keyword("FIRST") {
                Some(false)
            } else {
                self.expect_keyword("LAST")?;
                Some(true)
            }
        } else {
            None
        };
        Ok(OrderAst {
            path,
            descending,
            nulls_last,
        })
    }

    fn limit(&mut self) -> Result<u64, ParseError> {
        match self.peek().tok {
            Tok::Num(n) if n >= 0.0 && n.fract() == 0.0 && n <= u32::MAX as f64 => {
                self.bump();
                Ok(n as u64)
            }
            _ => Err(self.unexpected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::lex;
    use super::*;

    fn parse_str(src: &str) -> Result<QueryAst, ParseError> {
        parse(&lex(src).unwrap())
    }

    #[test]
    fn parses_the_incremental_sync_shape() {
        let q = parse_str(
            "select Id, Profile.UserLicense.Name from User where (SystemModstamp = \
             2024-05-01T00:00:00Z and Id > '005000000000001') or SystemModstamp > \
             2024-05-01T00:00:00Z order by SystemModstamp, Id desc nulls last limit 10",
        )
        .unwrap();
        assert_eq!(q.object, "User");
        assert_eq!(q.fields[1].parts, vec!["Profile", "UserLicense", "Name"]);
        let Some(Expr::Or(parts)) = &q.filter else {
            panic!("expected OR: {:?}", q.filter)
        };
        assert!(matches!(&parts[0], Expr::And(inner) if inner.len() == 2));
        assert_eq!(q.order.len(), 2);
        assert!(q.order[1].descending && q.order[1].nulls_last == Some(true));
        assert_eq!(q.limit, Some(10));
    }

    #[test]
    fn parses_not_and_in() {
        let q =
            parse_str("SELECT Id FROM User WHERE NOT IsActive = true AND Id NOT IN ('a')").unwrap();
        let Some(Expr::And(parts)) = &q.filter else {
            panic!()
        };
        assert!(matches!(&parts[0], Expr::Not(_)));
        assert!(matches!(&parts[1], Expr::In { negated: true, .. }));
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for (src, token) in [
            ("SELECT COUNT() FROM User", "("),
            ("SELECT Id FROM User WHERE Name LIKE 'a%'", "LIKE"),
            ("SELECT Id FROM User WHERE a = 1 AND b = 2 OR c = 3", "OR"),
            ("SELECT Id FROM User LIMIT 5 OFFSET 5", "OFFSET"),
            ("SELECT Id, FROM User", "FROM"),
            ("SELECT Id FROM User WHERE CreatedDate = TODAY", "TODAY"),
            ("SELECT Id FROM User ORDER Id", "Id"),
            ("SELECT Id FROM", "<EOF>"),
        ] {
            let err = parse_str(src).unwrap_err();
            assert_eq!(err.message, format!("unexpected token: '{token}'"), "{src}");
        }
    }
}
