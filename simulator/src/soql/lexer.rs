//! Splits SOQL text into tokens.
//!
//! Positions are character offsets into the query, which the error renderer turns into the
//! `Row:Column` Salesforce reports. Date and dateTime literals are recognised here, unquoted,
//! as SOQL writes them; a dateTime without a zone (what an unencoded `+` in a URL leaves
//! behind) fails at the character after the seconds, as Salesforce's lexer does.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A name or keyword.
    Ident(String),
    /// A quoted string, escapes resolved.
    Str(String),
    /// A number.
    Num(f64),
    /// A date literal.
    Date(NaiveDate),
    /// A dateTime literal, converted to UTC.
    DateTime(DateTime<Utc>),
    /// `,`
    Comma,
    /// `.`
    Dot,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// A comparison operator.
    Op(CmpOp),
    /// End of the query.
    Eof,
}

/// A token with where it starts and its source text.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// What it is.
    pub tok: Tok,
    /// Character offset of its first character.
    pub pos: usize,
    /// The text it was read from.
    pub text: String,
}

impl Token {
    /// Tells whether this is the given keyword, ignoring case.
    pub fn is_keyword(&self, keyword: &str) -> bool {
        matches!(&self.tok, Tok::Ident(name) if name.eq_ignore_ascii_case(keyword))
    }
}

/// A character the lexer could not fit into any token.
#[derive(Debug, Clone, PartialEq)]
pub struct LexError {
    /// Character offset of the offending character.
    pub pos: usize,
    /// What went wrong, without the position.
    pub message: String,
}

/// The tokens of a query, ending with `Eof`. On error, also returns the tokens read so far,
/// which the error renderer uses to find the object name.
pub fn lex(src: &str) -> Result<Vec<Token>, (Vec<Token>, LexError)> {
    let mut lexer = Lexer {
        chars: src.chars().collect(),
        pos: 0,
        tokens: Vec::new(),
    };
    match lexer.run() {
        Ok(()) => Ok(lexer.tokens),
        Err(e) => Err((lexer.tokens, e)),
    }
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    tokens: Vec<Token>,
}

impl Lexer {
    fn run(&mut self) -> Result<(), LexError> {
        while let Some(c) = self.peek(0) {
            let start = self.pos;
            let tok = match c {
                c if c.is_whitespace() => {
                    self.pos += 1;
                    continue;
                }
                ',' => self.single(Tok::Comma),
                '.' => self.single(Tok::Dot),
                '(' => self.single(Tok::LParen),
                ')' => self.single(Tok::RParen),
                '=' | '!' | '<' | '>' => self.operator()?,
                '\'' => self.string()?,
                c if c.is_ascii_digit() => self.number_or_date()?,
                '-' if self.peek(1).is_some_and(|d| d.is_ascii_digit()) => self.number()?,
                c if c.is_ascii_alphabetic() || c == '_' => self.ident(),
                other => return Err(unexpected_char(start, Some(other))),
            };
            let text = self.chars[start..self.pos].iter().collect();
            self.tokens.push(Token {
                tok,
                pos: start,
                text,
            });
        }
        self.tokens.push(Token {
            tok: Tok::Eof,
            pos: self.pos,
            text: "<EOF>".into(),
        });
        Ok(())
    }

    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn single(&mut self, tok: Tok) -> Tok {
        self.pos += 1;
        tok
    }

    fn operator(&mut self) -> Result<Tok, LexError> {
        let two = (self.peek(0), self.peek(1));
        let (op, len) = match two {
            (Some('!'), Some('=')) | (Some('<'), Some('>')) => (CmpOp::Ne, 2),
            (Some('<'), Some('=')) => (CmpOp::Le, 2),
            (Some('>'), Some('=')) => (CmpOp::Ge, 2),
            (Some('='), _) => (CmpOp::Eq, 1),
            (Some('<'), _) => (CmpOp::Lt, 1),
            (Some('>'), _) => (CmpOp::Gt, 1),
            _ => return Err(unexpected_char(self.pos + 1, self.peek(1))),
        };
        self.pos += len;
        Ok(Tok::Op(op))
    }

    fn ident(&mut self) -> Tok {
        let start = self.pos;
        while self
            .peek(0)
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.pos += 1;
        }
        Tok::Ident(self.chars[start..self.pos].iter().collect())
    }

    /// A single-quoted string with backslash escapes.
    fn string(&mut self) -> Result<Tok, LexError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek(0) else {
                let message = "mismatched character '<EOF>' expecting '''".to_owned();
                return Err(LexError {
                    pos: self.pos,
                    message,
                });
            };
            self.pos += 1;
            match c {
                '\'' => return Ok(Tok::Str(out)),
                '\\' => out.push_str(&self.escape(start)?),
                other => out.push(other),
            }
        }
    }

    /// The character(s) an escape sequence stands for. `\_` and `\%` stay escaped, since they
    /// only mean something to LIKE.
    fn escape(&mut self, string_start: usize) -> Result<String, LexError> {
        let c = self.peek(0);
        self.pos += 1;
        let resolved = match c {
            Some('n' | 'N') => "\n",
            Some('r' | 'R') => "\r",
            Some('t' | 'T') => "\t",
            Some('b' | 'B') => "\u{8}",
            Some('f' | 'F') => "\u{c}",
            Some('"') => "\"",
            Some('\'') => "'",
            Some('\\') => "\\",
            Some('_') => "\\_",
            Some('%') => "\\%",
            _ => {
                let literal: String = self.chars[string_start..self.pos.min(self.chars.len())]
                    .iter()
                    .collect();
                let sequence: String = ['\\'].into_iter().chain(c).collect();
                let message = format!(
                    "Invalid string literal '{literal}'. Illegal character sequence \
                     '{sequence}' in string literal."
                );
                return Err(LexError {
                    pos: string_start,
                    message,
                });
            }
        };
        Ok(resolved.to_owned())
    }

    /// A number, or a date/dateTime literal when the digits are shaped `YYYY-MM-DD`.
    fn number_or_date(&mut self) -> Result<Tok, LexError> {
        let shaped_like_date = (0..10).all(|i| {
            let c = self.peek(i);
            if i == 4 || i == 7 {
                c == Some('-')
            } else {
                c.is_some_and(|c| c.is_ascii_digit())
            }
        });
        if shaped_like_date {
            self.date_or_datetime()
        } else {
            self.number()
        }
    }

    fn number(&mut self) -> Result<Tok, LexError> {
        let start = self.pos;
        if self.peek(0) == Some('-') {
            self.pos += 1;
        }
        self.digits();
        if self.peek(0) == Some('.') && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
            self.digits();
        }
        self.expect_delimiter()?;
        let text: String = self.chars[start..self.pos].iter().collect();
        let value = text
            .parse()
            .map_err(|_| unexpected_char(start, self.chars.get(start).copied()))?;
        Ok(Tok::Num(value))
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Reads exactly `n` digits as a number, failing at the first non-digit.
    fn fixed_digits(&mut self, n: usize) -> Result<u32, LexError> {
        let mut value = 0;
        for _ in 0..n {
            match self.peek(0) {
                Some(c) if c.is_ascii_digit() => {
                    value = value * 10 + c.to_digit(10).unwrap_or(0);
                    self.pos += 1;
                }
                other => return Err(unexpected_char(self.pos, other)),
            }
        }
        Ok(value)
    }

    fn expect_char(&mut self, wanted: char) -> Result<(), LexError> {
        match self.peek(0) {
            Some(c) if c == wanted => {
                self.pos += 1;
                Ok(())
            }
            other => Err(unexpected_char(self.pos, other)),
        }
    }

    /// After a literal, only whitespace, punctuation or the end may follow.
    fn expect_delimiter(&self) -> Result<(), LexError> {
        match self.peek(0) {
            None => Ok(()),
            Some(c) if c.is_whitespace() || matches!(c, ',' | ')' | '(') => Ok(()),
            other => Err(unexpected_char(self.pos, other)),
        }
    }

    fn date_or_datetime(&mut self) -> Result<Tok, LexError> {
        let start = self.pos;
        let year = self.fixed_digits(4)?;
        self.expect_char('-')?;
        let month = self.fixed_digits(2)?;
        self.expect_char('-')?;
        let day = self.fixed_digits(2)?;
        let date = NaiveDate::from_ymd_opt(year as i32, month, day)
            .ok_or_else(|| self.invalid_literal(start))?;
        if self.peek(0) != Some('T') {
            self.expect_delimiter()?;
            return Ok(Tok::Date(date));
        }

        // Time of day, then optional fraction, then a mandatory zone.
        self.pos += 1;
        let hour = self.fixed_digits(2)?;
        self.expect_char(':')?;
        let minute = self.fixed_digits(2)?;
        self.expect_char(':')?;
        let second = self.fixed_digits(2)?;
        let mut millis = 0;
        if self.peek(0) == Some('.') {
            self.pos += 1;
            let frac_start = self.pos;
            if self.digits() == 0 {
                return Err(unexpected_char(self.pos, self.peek(0)));
            }
            let frac: String = self.chars[frac_start..self.pos].iter().take(3).collect();
            millis = format!("{frac:0<3}").parse().unwrap_or(0);
        }
        let time = NaiveTime::from_hms_milli_opt(hour, minute, second, millis)
            .ok_or_else(|| self.invalid_literal(start))?;
        let offset = self.zone()?;
        self.expect_delimiter()?;
        let local = NaiveDateTime::new(date, time);
        let at = offset
            .from_local_datetime(&local)
            .single()
            .ok_or_else(|| self.invalid_literal(start))?;
        Ok(Tok::DateTime(at.with_timezone(&Utc)))
    }

    /// The error for a date or dateTime literal that names no real instant.
    fn invalid_literal(&self, start: usize) -> LexError {
        let text: String = self.chars[start..self.pos].iter().collect();
        LexError {
            pos: start,
            message: format!("Invalid date: {text}"),
        }
    }

    /// `Z`, `+hh:mm`, `-hh:mm`, `+hhmm` or `-hhmm`.
    fn zone(&mut self) -> Result<FixedOffset, LexError> {
        let sign = match self.peek(0) {
            Some('Z') => {
                self.pos += 1;
                return Ok(Utc.fix());
            }
            Some('+') => 1,
            Some('-') => -1,
            other => return Err(unexpected_char(self.pos, other)),
        };
        self.pos += 1;
        let hours = self.fixed_digits(2)? as i32;
        if self.peek(0) == Some(':') {
            self.pos += 1;
        }
        let minutes = self.fixed_digits(2)? as i32;
        let seconds = sign * (hours * 3600 + minutes * 60);
        FixedOffset::east_opt(seconds).ok_or_else(|| unexpected_char(self.pos, self.peek(0)))
    }
}

/// The error for a character no token can start or continue with.
fn unexpected_char(pos: usize, c: Option<char>) -> LexError {
    let shown = c.map_or_else(|| "<EOF>".to_owned(), |c| c.to_string());
    LexError {
        pos,
        message: format!("no viable alternative at character '{shown}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        lex(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn reads_all_datetime_spellings_as_the_same_instant() {
        let want = Utc.with_ymd_and_hms(2024, 5, 1, 12, 34, 56).unwrap();
        for src in [
            "2024-05-01T12:34:56Z",
            "2024-05-01T12:34:56.000Z",
            "2024-05-01T12:34:56+00:00",
            "2024-05-01T12:34:56.000+0000",
            "2024-05-01T14:34:56+02:00",
            "2024-05-01T05:34:56-0700",
        ] {
            assert_eq!(toks(src), vec![Tok::DateTime(want), Tok::Eof], "{src}");
        }
    }

    #[test]
    fn reads_dates_numbers_strings_and_operators() {
        let date = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        assert_eq!(
            toks("a<=2024-05-01,'it\\'s'<>-1.5"),
            vec![
                Tok::Ident("a".into()),
                Tok::Op(CmpOp::Le),
                Tok::Date(date),
                Tok::Comma,
                Tok::Str("it's".into()),
                Tok::Op(CmpOp::Ne),
                Tok::Num(-1.5),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn a_datetime_without_zone_fails_at_the_next_character() {
        let (_, err) = lex("x > 2024-05-01T12:34:56.000 0000").unwrap_err();
        assert_eq!(err.pos, 27);
        assert_eq!(err.message, "no viable alternative at character ' '");
    }

    #[test]
    fn bad_strings_fail() {
        assert!(lex("'open").is_err());
        assert!(lex("'bad \\q escape'").is_err());
        assert!(lex("a # b").is_err());
        assert!(lex("2024-13-01").is_err());
    }
}
