//! Consul's `?filter=` expression language (the subset of HashiCorp's go-bexpr that Consul
//! documents), evaluated over the JSON wire shape of list responses.
//!
//! ```text
//! Action == allow and (SourceName == "web" or "prod" in Meta.env)
//! Meta["team name"] is not empty and not Description matches `^legacy`
//! ```
//!
//! A filter is parsed once per request ([`Filter::parse`]), checked against the selectors the
//! endpoint allows, and then run over each item ([`Filter::matches`], [`Filter::apply`]).
//! Values are always kept as text and converted to the type of the JSON value the selector
//! finds, as bexpr does: `Precedence == 9` and `Precedence == "9"` both compare numerically.
//!
//! Semantics, following bexpr:
//! - A missing selector (or a JSON `null`) makes `==`, `in`, `contains`, `matches` and
//!   `is not empty` false, and their negated forms and `is empty` true.
//! - A selector that walks through a list with parts left over (`Checks.Status`) matches when
//!   any element matches; a number part (`Tags.0`) indexes the list instead.
//! - `"v" in S` and `S contains "v"` are the same test: an element of a list, a key of an
//!   object, or a substring of a string.
//! - `==` on a list or object is false (and `!=` true); `is empty` on a number or bool is false.

use std::fmt;

use regex::{Regex, RegexBuilder};
use serde_json::Value;

#[cfg(test)]
mod tests;

/// The longest filter expression accepted, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 64 * 1024;

/// How deeply parentheses and `not` may nest.
pub const MAX_NESTING_DEPTH: usize = 64;

/// The most parts one selector may have (`A.B.C` has three).
pub const MAX_SELECTOR_PARTS: usize = 32;

/// The most `matches` / `not matches` operators one expression may use; with the per-pattern
/// size cap this bounds the memory a single filter can make the server spend on automata.
pub const MAX_REGEXES: usize = 16;

/// Compiled-size cap (and lazy-DFA cache cap) for one `matches` pattern, so a hostile pattern
/// cannot make the server build a huge automaton. `\w{10}` fits; `\w{100}` does not.
const MAX_REGEX_SIZE: usize = 1 << 20;

const PREFIX: &str = "Failed to create boolean expression evaluator";

/// Why a filter expression was rejected; the Display text is meant for the HTTP 400 body.
///
/// Every `pos` is a 1-based character position in the expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The expression is longer than [`MAX_EXPRESSION_LEN`].
    #[error("{PREFIX}: the expression is {len} bytes long; the limit is {max}")]
    TooLong {
        /// The expression's length in bytes.
        len: usize,
        /// The limit, [`MAX_EXPRESSION_LEN`].
        max: usize,
    },
    /// Parentheses and `not` nest deeper than [`MAX_NESTING_DEPTH`].
    #[error("{PREFIX}: parentheses and 'not' nest deeper than {max} at position {pos}")]
    TooDeep {
        /// Where the nesting went over the limit.
        pos: usize,
        /// The limit, [`MAX_NESTING_DEPTH`].
        max: usize,
    },
    /// A selector the endpoint does not offer.
    #[error("{PREFIX}: Selector {selector:?} is not valid (at position {pos})")]
    UnknownSelector {
        /// The selector as written.
        selector: String,
        /// Where it starts.
        pos: usize,
    },
    /// The pattern of a `matches` operator is not a valid regular expression.
    #[error("{PREFIX}: invalid regular expression {pattern:?} at position {pos}: {reason}")]
    BadRegex {
        /// The pattern, after unquoting.
        pattern: String,
        /// Where the pattern's literal starts.
        pos: usize,
        /// What the regex compiler said.
        reason: String,
    },
    /// A `"..."` or `` `...` `` literal with no closing quote.
    #[error("{PREFIX}: unterminated string literal starting at position {pos}")]
    UnterminatedString {
        /// Where the literal's opening quote is.
        pos: usize,
    },
    /// Any other malformed input: a missing operator, a stray token, a bad escape.
    #[error("{PREFIX}: {message} at position {pos}")]
    Syntax {
        /// Where the problem was found.
        pos: usize,
        /// What was expected or found.
        message: String,
    },
}

/// A parsed filter expression, ready to run over many JSON values.
#[derive(Clone)]
pub struct Filter {
    expr: Expr,
    source: String,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Filter").field(&self.source).finish()
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Filter {
    /// Parses `expr`, allowing only selectors that start with one of `selectors` (dotted
    /// paths such as `"Meta"` or `"Service.Tags"`; anything below an allowed path is allowed,
    /// which is how map selectors like `Meta.env` work). Regexes are compiled here.
    pub fn parse(expr: &str, selectors: &[&str]) -> Result<Filter, FilterError> {
        if expr.len() > MAX_EXPRESSION_LEN {
            return Err(FilterError::TooLong {
                len: expr.len(),
                max: MAX_EXPRESSION_LEN,
            });
        }
        let allowed: Vec<Vec<&str>> = selectors.iter().map(|s| s.split('.').collect()).collect();
        let mut p = Parser {
            src: expr,
            pos: 0,
            depth: 0,
            regexes: 0,
            allowed,
        };
        p.skip_ws();
        if p.at_end() {
            return Err(p.syntax(p.pos, "the expression is empty"));
        }
        let parsed = p.parse_or()?;
        p.skip_ws();
        match p.peek() {
            None => Ok(Filter {
                expr: parsed,
                source: expr.to_string(),
            }),
            Some(')') => Err(p.syntax(p.pos, "unmatched ')'")),
            Some(c) => Err(p.syntax(
                p.pos,
                format!("unexpected {c:?} after a complete expression (expected 'and', 'or' or the end)"),
            )),
        }
    }

    /// Whether `v` (one item of a list response) satisfies the filter.
    pub fn matches(&self, v: &Value) -> bool {
        self.expr.eval(v)
    }

    /// Keeps the items that satisfy the filter, in order.
    pub fn apply(&self, items: Vec<Value>) -> Vec<Value> {
        items.into_iter().filter(|v| self.matches(v)).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax tree and evaluation

#[derive(Debug, Clone)]
enum Expr {
    /// All must hold. `and` chains are flat so a long chain does not deepen the tree.
    And(Vec<Expr>),
    /// Any must hold.
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Match(Match),
}

#[derive(Debug, Clone)]
struct Match {
    path: Vec<String>,
    op: Op,
    /// `!=`, `is not empty`, `not in`, `not contains`, `not matches`.
    negate: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Equal(String),
    IsEmpty,
    /// `in` and `contains`: the value is in the selected list, object keys or string.
    Contains(String),
    Matches(Regex),
}

impl Expr {
    fn eval(&self, v: &Value) -> bool {
        match self {
            Expr::And(items) => items.iter().all(|e| e.eval(v)),
            Expr::Or(items) => items.iter().any(|e| e.eval(v)),
            Expr::Not(e) => !e.eval(v),
            Expr::Match(m) => m.eval(v, 0),
        }
    }
}

impl Match {
    /// Walks `self.path[depth..]` from `v`, then applies the operator.
    fn eval(&self, v: &Value, depth: usize) -> bool {
        let Some(part) = self.path.get(depth) else {
            return self.leaf(Some(v));
        };
        match v {
            Value::Object(map) => match map.get(part) {
                Some(next) => self.eval(next, depth + 1),
                None => self.leaf(None),
            },
            Value::Array(items) => {
                if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
                    match part.parse::<usize>().ok().and_then(|i| items.get(i)) {
                        Some(next) => self.eval(next, depth + 1),
                        None => self.leaf(None),
                    }
                } else {
                    // bexpr: selecting through a list is an implicit "any element".
                    items.iter().any(|item| self.eval(item, depth))
                }
            }
            _ => self.leaf(None),
        }
    }

    /// Applies the operator to the selected value (`None`: missing or null).
    fn leaf(&self, v: Option<&Value>) -> bool {
        let v = v.filter(|v| !v.is_null());
        let positive = match (&self.op, v) {
            (Op::IsEmpty, None) => true,
            (_, None) => false,
            (Op::Equal(raw), Some(v)) => scalar_eq(v, raw),
            (Op::IsEmpty, Some(v)) => match v {
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                _ => false,
            },
            (Op::Contains(raw), Some(v)) => match v {
                Value::String(s) => s.contains(raw.as_str()),
                Value::Array(a) => a.iter().any(|item| scalar_eq(item, raw)),
                Value::Object(o) => o.contains_key(raw),
                _ => false,
            },
            (Op::Matches(re), Some(v)) => match v {
                Value::String(s) => re.is_match(s),
                _ => false,
            },
        };
        positive != self.negate
    }
}

/// Compares a JSON scalar with a value written in the expression, converting the written
/// value to the JSON value's type. Lists, objects and null never equal anything.
fn scalar_eq(v: &Value, raw: &str) -> bool {
    match v {
        Value::String(s) => s == raw,
        Value::Bool(b) => parse_go_bool(raw) == Some(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                if let Ok(r) = raw.parse::<i64>() {
                    return i == r;
                }
            }
            if let Some(u) = n.as_u64() {
                if let Ok(r) = raw.parse::<u64>() {
                    return u == r;
                }
            }
            match (n.as_f64(), raw.parse::<f64>()) {
                (Some(a), Ok(b)) => a == b,
                _ => false,
            }
        }
        Value::Null | Value::Array(_) | Value::Object(_) => false,
    }
}

/// Go's `strconv.ParseBool`, which bexpr uses to convert values for bool fields.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Parser: recursive descent over the characters, bexpr's grammar with precedence
// or < and < not < parentheses / match.

struct Parser<'a> {
    src: &'a str,
    /// Byte offset of the next unread character.
    pos: usize,
    /// Current nesting of parentheses and `not`.
    depth: usize,
    /// `matches` operators compiled so far.
    regexes: usize,
    allowed: Vec<Vec<&'a str>>,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '/'
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    /// The 1-based character position of byte offset `byte`.
    fn col(&self, byte: usize) -> usize {
        self.src[..byte.min(self.src.len())].chars().count() + 1
    }

    fn syntax(&self, byte: usize, message: impl Into<String>) -> FilterError {
        FilterError::Syntax {
            pos: self.col(byte),
            message: message.into(),
        }
    }

    /// What is at the cursor, for error messages.
    fn found(&self) -> String {
        match self.peek() {
            None => "end of input".to_string(),
            Some(c) => format!("{c:?}"),
        }
    }

    /// Consumes `word` if it is next and is a whole word (not the start of a longer name).
    fn eat_keyword(&mut self, word: &str) -> bool {
        let rest = self.rest();
        if rest.starts_with(word) && !rest[word.len()..].chars().next().is_some_and(is_ident_char) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_NESTING_DEPTH {
            return Err(FilterError::TooDeep {
                pos: self.col(self.pos),
                max: MAX_NESTING_DEPTH,
            });
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Expr, FilterError> {
        let mut items = vec![self.parse_and()?];
        loop {
            self.skip_ws();
            if !self.eat_keyword("or") {
                break;
            }
            items.push(self.parse_and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn parse_and(&mut self) -> Result<Expr, FilterError> {
        let mut items = vec![self.parse_not()?];
        loop {
            self.skip_ws();
            if !self.eat_keyword("and") {
                break;
            }
            items.push(self.parse_not()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn parse_not(&mut self) -> Result<Expr, FilterError> {
        self.skip_ws();
        if self.eat_keyword("not") {
            self.enter()?;
            let inner = self.parse_not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.parse_primary()
    }

    fn parse_primary(&mut self) -> Result<Expr, FilterError> {
        self.skip_ws();
        if self.peek() == Some('(') {
            let open = self.pos;
            self.enter()?;
            self.pos += 1;
            let inner = self.parse_or()?;
            self.skip_ws();
            if self.peek() != Some(')') {
                return Err(self.syntax(
                    self.pos,
                    format!(
                        "expected ')' to close the '(' at position {}, found {}",
                        self.col(open),
                        self.found()
                    ),
                ));
            }
            self.pos += 1;
            self.depth -= 1;
            return Ok(inner);
        }
        self.parse_match()
    }

    fn parse_match(&mut self) -> Result<Expr, FilterError> {
        let start = self.pos;
        match self.peek() {
            Some('"' | '`') => {
                let value = self.parse_string()?;
                self.parse_in_tail(value)
            }
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let value = self.parse_number()?;
                self.parse_in_tail(value)
            }
            Some(c) if is_ident_start(c) => {
                let path = self.parse_path()?;
                let src = self.src;
                let text = &src[start..self.pos];
                self.skip_ws();
                let op_pos = self.pos;
                let (op, negate) = if self.rest().starts_with("==") {
                    self.pos += 2;
                    (Op::Equal(self.parse_value()?), false)
                } else if self.rest().starts_with("!=") {
                    self.pos += 2;
                    (Op::Equal(self.parse_value()?), true)
                } else if self.eat_keyword("is") {
                    self.skip_ws();
                    let negate = self.eat_keyword("not");
                    self.skip_ws();
                    if !self.eat_keyword("empty") {
                        return Err(self.syntax(
                            self.pos,
                            format!("expected 'empty' after 'is', found {}", self.found()),
                        ));
                    }
                    (Op::IsEmpty, negate)
                } else if self.eat_keyword("contains") {
                    (Op::Contains(self.parse_value()?), false)
                } else if self.eat_keyword("matches") {
                    (self.parse_regex()?, false)
                } else if self.eat_keyword("in") {
                    // `word in Selector`: what looked like a selector was a bare value.
                    return self.finish_in(text.to_string(), false);
                } else if self.eat_keyword("not") {
                    self.skip_ws();
                    if self.eat_keyword("contains") {
                        (Op::Contains(self.parse_value()?), true)
                    } else if self.eat_keyword("matches") {
                        (self.parse_regex()?, true)
                    } else if self.eat_keyword("in") {
                        return self.finish_in(text.to_string(), true);
                    } else {
                        return Err(self.syntax(
                            self.pos,
                            format!(
                                "expected 'in', 'contains' or 'matches' after 'not', found {}",
                                self.found()
                            ),
                        ));
                    }
                } else {
                    return Err(self.syntax(
                        op_pos,
                        format!(
                            "expected an operator (==, !=, is empty, is not empty, in, not in, \
                             contains, not contains, matches, not matches) after {text:?}, found {}",
                            self.found()
                        ),
                    ));
                };
                self.check_selector(&path, text, start)?;
                Ok(Expr::Match(Match { path, op, negate }))
            }
            _ => Err(self.syntax(
                start,
                format!(
                    "expected a selector, a value or '(', found {}",
                    self.found()
                ),
            )),
        }
    }

    /// After a quoted or number value: `in Selector` or `not in Selector`.
    fn parse_in_tail(&mut self, value: String) -> Result<Expr, FilterError> {
        self.skip_ws();
        if self.eat_keyword("in") {
            return self.finish_in(value, false);
        }
        if self.eat_keyword("not") {
            self.skip_ws();
            if self.eat_keyword("in") {
                return self.finish_in(value, true);
            }
        }
        Err(self.syntax(
            self.pos,
            format!(
                "expected 'in' or 'not in' after a value, found {}",
                self.found()
            ),
        ))
    }

    fn finish_in(&mut self, value: String, negate: bool) -> Result<Expr, FilterError> {
        self.skip_ws();
        let start = self.pos;
        if !self.peek().is_some_and(is_ident_start) {
            return Err(self.syntax(
                start,
                format!("expected a selector after 'in', found {}", self.found()),
            ));
        }
        let path = self.parse_path()?;
        let text = &self.src[start..self.pos];
        self.check_selector(&path, text, start)?;
        Ok(Expr::Match(Match {
            path,
            op: Op::Contains(value),
            negate,
        }))
    }

    /// `Ident ( "." Ident | "." Digits | "." String | "[" String "]" )*`.
    fn parse_path(&mut self) -> Result<Vec<String>, FilterError> {
        let start = self.pos;
        let mut parts = vec![self.parse_ident()];
        loop {
            let part_pos = self.pos;
            match self.peek() {
                Some('.') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) if is_ident_start(c) => parts.push(self.parse_ident()),
                        Some(c) if c.is_ascii_digit() => {
                            let begin = self.pos;
                            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                                self.pos += 1;
                            }
                            parts.push(self.src[begin..self.pos].to_string());
                        }
                        Some('"' | '`') => parts.push(self.parse_string()?),
                        _ => {
                            return Err(self.syntax(
                                part_pos,
                                format!(
                                "expected a name, a number or a quoted string after '.', found {}",
                                self.found()
                            ),
                            ))
                        }
                    }
                }
                Some('[') => {
                    self.pos += 1;
                    self.skip_ws();
                    if !matches!(self.peek(), Some('"' | '`')) {
                        return Err(self.syntax(
                            self.pos,
                            format!(
                                "expected a quoted string inside '[...]', found {}",
                                self.found()
                            ),
                        ));
                    }
                    parts.push(self.parse_string()?);
                    self.skip_ws();
                    if self.peek() != Some(']') {
                        return Err(self.syntax(
                            self.pos,
                            format!(
                                "expected ']' to close the '[' at position {}, found {}",
                                self.col(part_pos),
                                self.found()
                            ),
                        ));
                    }
                    self.pos += 1;
                }
                _ => break,
            }
            if parts.len() > MAX_SELECTOR_PARTS {
                return Err(self.syntax(
                    start,
                    format!("selector has more than {MAX_SELECTOR_PARTS} parts"),
                ));
            }
        }
        Ok(parts)
    }

    fn parse_ident(&mut self) -> String {
        let begin = self.pos;
        while self.peek().is_some_and(is_ident_char) {
            self.pos += 1;
        }
        self.src[begin..self.pos].to_string()
    }

    fn check_selector(&self, path: &[String], text: &str, start: usize) -> Result<(), FilterError> {
        let ok = self.allowed.iter().any(|allowed| {
            allowed.len() <= path.len() && allowed.iter().zip(path).all(|(a, p)| *a == p.as_str())
        });
        if ok {
            Ok(())
        } else {
            Err(FilterError::UnknownSelector {
                selector: text.to_string(),
                pos: self.col(start),
            })
        }
    }

    /// The right-hand side of `==`, `!=`, `contains`: a quoted string, a number, or a bare
    /// word in selector syntax (taken as its text).
    fn parse_value(&mut self) -> Result<String, FilterError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            Some('"' | '`') => self.parse_string(),
            Some(c) if c == '-' || c.is_ascii_digit() => self.parse_number(),
            Some(c) if is_ident_start(c) => {
                self.parse_path()?;
                Ok(self.src[start..self.pos].to_string())
            }
            _ => Err(self.syntax(start, format!("expected a value, found {}", self.found()))),
        }
    }

    fn parse_regex(&mut self) -> Result<Op, FilterError> {
        self.skip_ws();
        let start = self.pos;
        if self.regexes == MAX_REGEXES {
            return Err(self.syntax(
                start,
                format!("more than {MAX_REGEXES} 'matches' operators in one expression"),
            ));
        }
        self.regexes += 1;
        let pattern = self.parse_value()?;
        let re = RegexBuilder::new(&pattern)
            .size_limit(MAX_REGEX_SIZE)
            .dfa_size_limit(MAX_REGEX_SIZE)
            .build()
            .map_err(|e| FilterError::BadRegex {
                reason: regex_reason(&e),
                pattern,
                pos: self.col(start),
            })?;
        Ok(Op::Matches(re))
    }

    /// `-? [0-9]+ ( "." [0-9]+ )?`, which must be followed by whitespace, `)` or the end.
    fn parse_number(&mut self) -> Result<String, FilterError> {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        let digits = |p: &mut Self| {
            let begin = p.pos;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.pos += 1;
            }
            p.pos > begin
        };
        let mut ok = digits(self);
        if ok && self.peek() == Some('.') && self.peek_second().is_some_and(|c| c.is_ascii_digit())
        {
            self.pos += 1;
            ok = digits(self);
        }
        let boundary = matches!(self.peek(), None | Some(')')) || self.peek().is_some_and(is_ws);
        if !ok || !boundary {
            return Err(self.syntax(start, "invalid number literal"));
        }
        Ok(self.src[start..self.pos].to_string())
    }

    /// A `` `raw` `` string (no escapes) or a `"quoted"` string with Go's escapes.
    fn parse_string(&mut self) -> Result<String, FilterError> {
        let start = self.pos;
        let unterminated = |p: &Self| FilterError::UnterminatedString { pos: p.col(start) };
        match self.bump() {
            Some('`') => {
                let Some(len) = self.rest().find('`') else {
                    return Err(unterminated(self));
                };
                let s = self.rest()[..len].to_string();
                self.pos += len + 1;
                Ok(s)
            }
            Some('"') => {
                let mut out = String::new();
                loop {
                    let esc_pos = self.pos;
                    match self.bump() {
                        None => return Err(unterminated(self)),
                        Some('"') => return Ok(out),
                        Some('\\') => out.push(self.parse_escape(esc_pos)?),
                        Some(c) => out.push(c),
                    }
                }
            }
            _ => Err(self.syntax(start, "expected a string literal")),
        }
    }

    /// One escape after a backslash at `esc_pos` (Go's set; `\x` and octal must be ASCII).
    fn parse_escape(&mut self, esc_pos: usize) -> Result<char, FilterError> {
        let bad = |p: &Self, what: &str| p.syntax(esc_pos, what.to_string());
        let Some(c) = self.bump() else {
            return Err(FilterError::UnterminatedString {
                pos: self.col(esc_pos),
            });
        };
        let code = match c {
            'a' => 0x07,
            'b' => 0x08,
            'f' => 0x0c,
            'n' => 0x0a,
            'r' => 0x0d,
            't' => 0x09,
            'v' => 0x0b,
            '\\' | '"' | '\'' => return Ok(c),
            'x' => self
                .hex_digits(2)
                .ok_or_else(|| bad(self, "invalid \\x escape"))?,
            'u' => self
                .hex_digits(4)
                .ok_or_else(|| bad(self, "invalid \\u escape"))?,
            'U' => self
                .hex_digits(8)
                .ok_or_else(|| bad(self, "invalid \\U escape"))?,
            '0'..='7' => {
                let mut v = c as u32 - '0' as u32;
                for _ in 0..2 {
                    match self.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            self.pos += 1;
                        }
                        None => return Err(bad(self, "invalid octal escape (needs 3 digits)")),
                    }
                }
                v
            }
            _ => {
                return Err(bad(
                    self,
                    &format!(
                        "unknown escape sequence \\{c} (use a `raw string` for regular expressions)"
                    ),
                ))
            }
        };
        if matches!(c, 'x' | '0'..='7') && code > 0x7f {
            return Err(bad(self, "byte escapes above \\x7f are not valid UTF-8"));
        }
        char::from_u32(code).ok_or_else(|| bad(self, "escape is not a valid Unicode character"))
    }

    fn hex_digits(&mut self, n: usize) -> Option<u32> {
        let digits = self.rest().get(..n)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let v = u32::from_str_radix(digits, 16).ok()?;
        self.pos += n;
        Some(v)
    }
}

/// The regex crate's syntax errors span several lines (pattern, caret, message); keep the
/// message line so the HTTP body stays one line.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| text.replace('\n', " "))
}
