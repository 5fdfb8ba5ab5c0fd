//! Templates and conditions: the small, safe expression language of playbooks (no eval, no
//! functions, no loops; parsing and evaluation are bounded and never panic).
//!
//! # Paths
//! `incident.title`, `variables.weights.url_shortener`, `steps.indicators.urls[0]`,
//! `incident.raw['@odata.type']`, `triage.score`. A missing key or index evaluates to `null`.
//! `.length` on an array, string or object (when it has no such key) is its size.
//!
//! # Conditions (`when:`)
//! * literals: numbers (`70`, `-1.5`), strings (`'single'` or `"double"`), `true`, `false`,
//!   `null`, arrays `['high', 'critical']`;
//! * comparisons: `==` `!=` (JSON equality, `1 == 1.0`), `>` `>=` `<` `<=` (numbers with
//!   numbers, strings with strings; anything else is false);
//! * `a contains b` (array element, substring, or object key) and `b in a`, `b not in a`;
//! * `and` / `or` / `not` (also `&&`, `||`, `!`), parentheses;
//! * truthiness: `null`, `false`, `0`, `""`, `[]` and `{}` are false, everything else true.
//!
//! # Templates (parameter values)
//! `{{ expr }}` inside a string. A string that is exactly one template yields the value itself
//! (an array stays an array); otherwise each template is rendered as text and interpolated
//! (`null` renders as nothing, arrays and objects as JSON).
//!
//! # Size limits
//! A template is data a sender controls flowing into a stored result, so its output is bounded:
//! rendered text longer than [`MAX_RENDERED_BYTES`] is cut on a character boundary and ends with
//! [`TRUNCATED_MARK`] (a single long value, such as an e-mail body, still reads sensibly). What
//! can be refused before any run is refused by the playbook's validation: more than
//! [`MAX_INTERPOLATIONS`] `{{ }}` in one parameter, more than [`MAX_LITERAL_BYTES`] of literal text,
//! or a template that copies the whole raw payload ([`unbounded_path`]).

use serde_json::{Number, Value};
use std::fmt;

/// Longest expression accepted, in bytes.
pub const MAX_EXPR_LEN: usize = 4096;
/// Deepest nesting (parentheses, `not`, array literals) accepted.
pub const MAX_DEPTH: usize = 48;
/// Longest text one template renders to, in bytes; longer text is cut and marked. Equal to the
/// most `check_text` reads of one text, so no detection is lost to the cut.
pub const MAX_RENDERED_BYTES: usize = 64 * 1024;
/// What ends a rendered text that was cut at [`MAX_RENDERED_BYTES`].
pub const TRUNCATED_MARK: &str = "...[truncated]";
/// Most `{{ }}` in one parameter value, all its strings together (refused at validation): with
/// [`MAX_RENDERED_BYTES`] this bounds what one parameter can render to before the run checks it.
pub const MAX_INTERPOLATIONS: usize = 16;
/// Most literal text in one parameter string, template or not (refused at validation).
pub const MAX_LITERAL_BYTES: usize = 16 * 1024;

/// A parse error with its byte offset in the source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub message: String,
    pub offset: usize,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at offset {})", self.message, self.offset)
    }
}

impl std::error::Error for ExprError {}

fn err<T>(message: impl Into<String>, offset: usize) -> Result<T, ExprError> {
    Err(ExprError { message: message.into(), offset })
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A dotted path into the context.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub segments: Vec<Segment>,
}

impl Path {
    /// The first segment (`incident`, `variables`, `steps`, `triage`).
    pub fn root(&self) -> &str {
        match self.segments.first() {
            Some(Segment::Key(k)) => k,
            _ => "",
        }
    }

    /// The second segment when it is a key.
    pub fn second(&self) -> Option<&str> {
        match self.segments.get(1) {
            Some(Segment::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// Looks the path up in `ctx`; missing parts give `null`.
    pub fn eval(&self, ctx: &Value) -> Value {
        self.eval_from(ctx, 0)
    }

    /// Looks the path's segments from `skip` on up in `start` (where the first `skip` lead).
    fn eval_from(&self, start: &Value, skip: usize) -> Value {
        let mut cur = start;
        for (i, seg) in self.segments.iter().enumerate().skip(skip) {
            match (seg, cur) {
                (Segment::Key(k), Value::Object(o)) if o.contains_key(k) => cur = &o[k],
                (Segment::Key(k), v) if k == "length" && i + 1 == self.segments.len() => {
                    return match v {
                        Value::Array(a) => Value::from(a.len()),
                        Value::String(s) => Value::from(s.chars().count()),
                        Value::Object(o) => Value::from(o.len()),
                        _ => Value::Null,
                    };
                }
                (Segment::Index(i), Value::Array(a)) if *i < a.len() => cur = &a[*i],
                _ => return Value::Null,
            }
        }
        cur.clone()
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.segments.iter().enumerate() {
            match s {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// What an expression's paths are read from.
pub trait Scope {
    /// The value at `path`; missing parts give `null`.
    fn get(&self, path: &Path) -> Value;
}

/// A context object `{incident, variables, steps, triage}` as it is.
impl Scope for Value {
    fn get(&self, path: &Path) -> Value {
        path.eval(self)
    }
}

/// The engine's context: the object `{incident, variables, steps, triage}` without the incident's
/// raw payload, and the payload beside it, read where it is as `incident.raw` (a copy of it in
/// every run's context, made and dropped, was about a fifth of a run on a 3 KB alert). Reads
/// what the object with the payload inside would.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub tree: &'a Value,
    pub raw: &'a Value,
}

impl Scope for Context<'_> {
    fn get(&self, path: &Path) -> Value {
        match path.segments.as_slice() {
            [Segment::Key(root), Segment::Key(field), ..] if root == "incident" && field == "raw" => path.eval_from(self.raw, 2),
            [Segment::Key(root)] if root == "incident" => {
                let mut incident = path.eval(self.tree);
                if let Value::Object(o) = &mut incident {
                    o.insert("raw".into(), self.raw.clone());
                }
                incident
            }
            _ => path.eval(self.tree),
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Contains,
    In,
    NotIn,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Value),
    Path(Path),
    Array(Vec<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
}

impl Expr {
    /// Evaluates against a context (`{incident, variables, steps, triage}`).
    pub fn eval<S: Scope + ?Sized>(&self, ctx: &S) -> Value {
        match self {
            Expr::Lit(v) => v.clone(),
            Expr::Path(p) => ctx.get(p),
            Expr::Array(items) => Value::Array(items.iter().map(|e| e.eval(ctx)).collect()),
            Expr::Not(e) => Value::Bool(!truthy(&e.eval(ctx))),
            Expr::And(a, b) => Value::Bool(truthy(&a.eval(ctx)) && truthy(&b.eval(ctx))),
            Expr::Or(a, b) => Value::Bool(truthy(&a.eval(ctx)) || truthy(&b.eval(ctx))),
            Expr::Cmp(op, a, b) => Value::Bool(compare(*op, &a.eval(ctx), &b.eval(ctx))),
        }
    }

    /// Evaluates as a condition.
    pub fn test<S: Scope + ?Sized>(&self, ctx: &S) -> bool {
        truthy(&self.eval(ctx))
    }

    /// Every path the expression reads, in source order.
    pub fn paths(&self) -> Vec<&Path> {
        let mut out = Vec::new();
        self.collect_paths(&mut out);
        out
    }

    fn collect_paths<'a>(&'a self, out: &mut Vec<&'a Path>) {
        match self {
            Expr::Lit(_) => {}
            Expr::Path(p) => out.push(p),
            Expr::Array(items) => items.iter().for_each(|e| e.collect_paths(out)),
            Expr::Not(e) => e.collect_paths(out),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) => {
                a.collect_paths(out);
                b.collect_paths(out);
            }
        }
    }
}

/// Truthiness: `null`, `false`, `0`, `""`, `[]`, `{}` are false.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// JSON equality where numbers compare by value (`1 == 1.0`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        _ => a == b,
    }
}

fn compare(op: CmpOp, a: &Value, b: &Value) -> bool {
    use std::cmp::Ordering::*;
    let ord = || match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    };
    match op {
        CmpOp::Eq => json_eq(a, b),
        CmpOp::Ne => !json_eq(a, b),
        CmpOp::Gt => ord() == Some(Greater),
        CmpOp::Ge => matches!(ord(), Some(Greater | Equal)),
        CmpOp::Lt => ord() == Some(Less),
        CmpOp::Le => matches!(ord(), Some(Less | Equal)),
        CmpOp::Contains => contains(a, b),
        CmpOp::In => contains(b, a),
        CmpOp::NotIn => !contains(b, a),
    }
}

fn contains(haystack: &Value, needle: &Value) -> bool {
    match (haystack, needle) {
        (Value::Array(items), n) => items.iter().any(|i| json_eq(i, n)),
        (Value::String(h), Value::String(n)) => h.contains(n.as_str()),
        (Value::Object(o), Value::String(k)) => o.contains_key(k),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(Number),
    Str(String),
    Dot,
    LBracket,
    RBracket,
    LParen,
    RParen,
    Comma,
    Op(CmpOp),
    AndAnd,
    OrOr,
    Bang,
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    if src.len() > MAX_EXPR_LEN {
        return err(format!("expression longer than {MAX_EXPR_LEN} bytes"), 0);
    }
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let next = chars.get(i + 1).map(|x| x.1);
        match c {
            c if c.is_whitespace() => i += 1,
            '.' => {
                out.push((Tok::Dot, at));
                i += 1
            }
            '[' => {
                out.push((Tok::LBracket, at));
                i += 1
            }
            ']' => {
                out.push((Tok::RBracket, at));
                i += 1
            }
            '(' => {
                out.push((Tok::LParen, at));
                i += 1
            }
            ')' => {
                out.push((Tok::RParen, at));
                i += 1
            }
            ',' => {
                out.push((Tok::Comma, at));
                i += 1
            }
            '=' if next == Some('=') => {
                out.push((Tok::Op(CmpOp::Eq), at));
                i += 2
            }
            '!' if next == Some('=') => {
                out.push((Tok::Op(CmpOp::Ne), at));
                i += 2
            }
            '!' => {
                out.push((Tok::Bang, at));
                i += 1
            }
            '>' | '<' => {
                let eq = next == Some('=');
                let op = match (c, eq) {
                    ('>', true) => CmpOp::Ge,
                    ('>', false) => CmpOp::Gt,
                    ('<', true) => CmpOp::Le,
                    _ => CmpOp::Lt,
                };
                out.push((Tok::Op(op), at));
                i += if eq { 2 } else { 1 };
            }
            '&' if next == Some('&') => {
                out.push((Tok::AndAnd, at));
                i += 2
            }
            '|' if next == Some('|') => {
                out.push((Tok::OrOr, at));
                i += 2
            }
            '\'' | '"' => {
                let quote = c;
                let mut s = String::new();
                let mut j = i + 1;
                let mut closed = false;
                while j < chars.len() {
                    let ch = chars[j].1;
                    if ch == '\\' && j + 1 < chars.len() {
                        s.push(chars[j + 1].1);
                        j += 2;
                        continue;
                    }
                    if ch == quote {
                        closed = true;
                        break;
                    }
                    s.push(ch);
                    j += 1;
                }
                if !closed {
                    return err("unterminated string", at);
                }
                out.push((Tok::Str(s), at));
                i = j + 1;
            }
            c if c.is_ascii_digit() || (c == '-' && next.is_some_and(|n| n.is_ascii_digit())) => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].1.is_ascii_digit() || chars[j].1 == '.') {
                    // `steps.x[0].y`: a dot not followed by a digit ends the number.
                    if chars[j].1 == '.' && !chars.get(j + 1).is_some_and(|n| n.1.is_ascii_digit()) {
                        break;
                    }
                    j += 1;
                }
                let end = chars.get(j).map_or(src.len(), |x| x.0);
                let text = &src[at..end];
                let num = if text.contains('.') {
                    text.parse::<f64>().ok().and_then(Number::from_f64)
                } else {
                    text.parse::<i64>().ok().map(Number::from)
                };
                match num {
                    Some(n) => out.push((Tok::Num(n), at)),
                    None => return err(format!("bad number '{text}'"), at),
                }
                i = j;
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].1.is_alphanumeric() || chars[j].1 == '_' || chars[j].1 == '-') {
                    j += 1;
                }
                let end = chars.get(j).map_or(src.len(), |x| x.0);
                out.push((Tok::Ident(src[at..end].to_string()), at));
                i = j;
            }
            other => return err(format!("unexpected character '{other}'"), at),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |t| t.1)
    }

    fn is_ident(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w == word)
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { err("expression nested too deeply", self.offset()) } else { Ok(()) }
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.and()?;
        while self.is_ident("or") || self.peek() == Some(&Tok::OrOr) {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.not()?;
        while self.is_ident("and") || self.peek() == Some(&Tok::AndAnd) {
            self.pos += 1;
            let right = self.not()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ExprError> {
        if self.is_ident("not") || self.peek() == Some(&Tok::Bang) {
            self.pos += 1;
            self.enter()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, ExprError> {
        let left = self.primary()?;
        let op = match self.peek() {
            Some(Tok::Op(op)) => Some(*op),
            Some(Tok::Ident(w)) if w == "contains" => Some(CmpOp::Contains),
            Some(Tok::Ident(w)) if w == "in" => Some(CmpOp::In),
            Some(Tok::Ident(w)) if w == "not" && matches!(self.toks.get(self.pos + 1), Some((Tok::Ident(n), _)) if n == "in") => {
                self.pos += 1;
                Some(CmpOp::NotIn)
            }
            _ => None,
        };
        let Some(op) = op else { return Ok(left) };
        self.pos += 1;
        let right = self.primary()?;
        Ok(Expr::Cmp(op, Box::new(left), Box::new(right)))
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let at = self.offset();
        let Some(tok) = self.peek().cloned() else { return err("expected a value", at) };
        self.pos += 1;
        match tok {
            Tok::Num(n) => Ok(Expr::Lit(Value::Number(n))),
            Tok::Str(s) => Ok(Expr::Lit(Value::String(s))),
            Tok::LParen => {
                self.enter()?;
                let e = self.or()?;
                self.depth -= 1;
                if self.peek() != Some(&Tok::RParen) {
                    return err("expected ')'", self.offset());
                }
                self.pos += 1;
                Ok(e)
            }
            Tok::LBracket => {
                self.enter()?;
                let mut items = Vec::new();
                if self.peek() == Some(&Tok::RBracket) {
                    self.pos += 1;
                } else {
                    loop {
                        items.push(self.or()?);
                        match self.peek() {
                            Some(Tok::Comma) => self.pos += 1,
                            Some(Tok::RBracket) => {
                                self.pos += 1;
                                break;
                            }
                            _ => return err("expected ',' or ']'", self.offset()),
                        }
                    }
                }
                self.depth -= 1;
                Ok(Expr::Array(items))
            }
            Tok::Ident(w) => match w.as_str() {
                "true" => Ok(Expr::Lit(Value::Bool(true))),
                "false" => Ok(Expr::Lit(Value::Bool(false))),
                "null" => Ok(Expr::Lit(Value::Null)),
                "and" | "or" | "not" | "contains" | "in" => err(format!("expected a value, found '{w}'"), at),
                _ => self.path(w),
            },
            _ => err("expected a value", at),
        }
    }

    fn path(&mut self, root: String) -> Result<Expr, ExprError> {
        let mut segments = vec![Segment::Key(root)];
        loop {
            match self.peek() {
                Some(Tok::Dot) => {
                    self.pos += 1;
                    match self.peek().cloned() {
                        Some(Tok::Ident(k)) => {
                            self.pos += 1;
                            segments.push(Segment::Key(k));
                        }
                        // `x.0` style index.
                        Some(Tok::Num(n)) if n.as_u64().is_some() => {
                            self.pos += 1;
                            segments.push(Segment::Index(n.as_u64().unwrap_or(0) as usize));
                        }
                        _ => return err("expected a name after '.'", self.offset()),
                    }
                }
                Some(Tok::LBracket) => {
                    self.pos += 1;
                    let seg = match self.peek().cloned() {
                        Some(Tok::Num(n)) => match n.as_u64() {
                            Some(i) => Segment::Index(usize::try_from(i).unwrap_or(usize::MAX)),
                            None => return err("index must be a non-negative integer", self.offset()),
                        },
                        Some(Tok::Str(s)) => Segment::Key(s),
                        _ => return err("expected an index or a quoted key", self.offset()),
                    };
                    self.pos += 1;
                    if self.peek() != Some(&Tok::RBracket) {
                        return err("expected ']'", self.offset());
                    }
                    self.pos += 1;
                    segments.push(seg);
                }
                _ => return Ok(Expr::Path(Path { segments })),
            }
        }
    }
}

/// Parses a condition expression.
pub fn parse_expr(src: &str) -> Result<Expr, ExprError> {
    let toks = lex(src)?;
    if toks.is_empty() {
        return err("empty expression", 0);
    }
    let mut p = Parser { toks, pos: 0, depth: 0, end: src.len() };
    let e = p.or()?;
    if p.pos < p.toks.len() {
        return err("unexpected text after the expression", p.offset());
    }
    Ok(e)
}

// ---------------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------------

/// A piece of a template string.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Expr(Expr),
}

/// A string with `{{ expr }}` parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub pieces: Vec<Piece>,
}

/// Whether a string contains a `{{`.
pub fn has_template(s: &str) -> bool {
    s.contains("{{")
}

/// Parses a template string.
pub fn parse_template(s: &str) -> Result<Template, ExprError> {
    let mut pieces = Vec::new();
    let mut rest = s;
    let mut base = 0;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_string()));
        }
        let inner_start = open + 2;
        let Some(close) = rest[inner_start..].find("}}") else {
            return err("unterminated '{{' (missing '}}')", base + open);
        };
        let inner = &rest[inner_start..inner_start + close];
        let expr = parse_expr(inner).map_err(|e| ExprError { message: e.message, offset: base + inner_start + e.offset })?;
        pieces.push(Piece::Expr(expr));
        let consumed = inner_start + close + 2;
        base += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(Template { pieces })
}

impl Template {
    /// Renders: exactly one template and nothing else gives the value itself, otherwise text.
    /// Text (and a string value) is cut at [`MAX_RENDERED_BYTES`] and marked; rendering stops
    /// there, so a template repeating a large value costs one cut copy, not all of them.
    pub fn render<S: Scope + ?Sized>(&self, ctx: &S) -> Value {
        if let [Piece::Expr(e)] = self.pieces.as_slice() {
            return match e.eval(ctx) {
                Value::String(s) if s.len() > MAX_RENDERED_BYTES => Value::String(truncate_marked(&s)),
                v => v,
            };
        }
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Expr(e) => out.push_str(&as_text(&e.eval(ctx))),
            }
            if out.len() > MAX_RENDERED_BYTES {
                return Value::String(truncate_marked(&out));
            }
        }
        Value::String(out)
    }

    /// How many `{{ }}` the template holds.
    pub fn interpolations(&self) -> usize {
        self.pieces.iter().filter(|p| matches!(p, Piece::Expr(_))).count()
    }

    /// The bytes of literal text around the `{{ }}`.
    pub fn literal_len(&self) -> usize {
        self.pieces.iter().map(|p| if let Piece::Text(t) = p { t.len() } else { 0 }).sum()
    }

    /// Every path read by the template's expressions.
    pub fn paths(&self) -> Vec<&Path> {
        self.pieces
            .iter()
            .flat_map(|p| match p {
                Piece::Expr(e) => e.paths(),
                Piece::Text(_) => vec![],
            })
            .collect()
    }
}

/// `s` cut to [`MAX_RENDERED_BYTES`] (mark included) on a character boundary, ending with
/// [`TRUNCATED_MARK`].
pub fn truncate_marked(s: &str) -> String {
    let mut end = MAX_RENDERED_BYTES - TRUNCATED_MARK.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED_MARK}", &s[..end])
}

/// Whether a template reading `path` could copy an unbounded amount of sender data into the
/// result: the whole incident or its whole raw payload (a field of it, `incident.raw.subject`,
/// is fine: it is cut like any other text).
pub fn unbounded_path(path: &Path) -> bool {
    match path.segments.as_slice() {
        [Segment::Key(root)] => root == "incident",
        [Segment::Key(root), Segment::Key(field)] => root == "incident" && field == "raw",
        _ => false,
    }
}

/// A value as text for interpolation: strings as-is, `null` empty, others as JSON.
pub fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A step's parameter value with the templates inside it parsed (strings in arrays and objects
/// too): parsed once when a playbook is prepared ([`super::engine::PreparedPlaybook`]), rendered
/// on every run.
#[derive(Debug, Clone, PartialEq)]
pub enum Parameter {
    /// A value without a template, used as it is.
    Fixed(Value),
    /// A string with `{{ }}`.
    Template(Template),
    Array(Vec<Parameter>),
    /// In the value's key order.
    Object(Vec<(String, Parameter)>),
}

impl Parameter {
    /// Parses every template inside `v`; the error is the first bad one in the value's order.
    pub fn parse(v: &Value) -> Result<Parameter, ExprError> {
        Ok(match v {
            Value::String(s) if has_template(s) => Parameter::Template(parse_template(s)?),
            Value::Array(items) => Parameter::Array(items.iter().map(Parameter::parse).collect::<Result<_, _>>()?),
            Value::Object(o) => {
                Parameter::Object(o.iter().map(|(k, v)| Ok((k.clone(), Parameter::parse(v)?))).collect::<Result<_, ExprError>>()?)
            }
            other => Parameter::Fixed(other.clone()),
        })
    }

    /// The value with every template rendered against `ctx`.
    pub fn render<S: Scope + ?Sized>(&self, ctx: &S) -> Value {
        match self {
            Parameter::Fixed(v) => v.clone(),
            Parameter::Template(t) => t.render(ctx),
            Parameter::Array(items) => Value::Array(items.iter().map(|p| p.render(ctx)).collect()),
            Parameter::Object(o) => Value::Object(o.iter().map(|(k, p)| (k.clone(), p.render(ctx))).collect()),
        }
    }
}

/// Every template string inside a parameter value, parsed (for validation).
pub fn templates_in(v: &Value) -> Vec<Result<Template, ExprError>> {
    let mut out = Vec::new();
    fn go(v: &Value, out: &mut Vec<Result<Template, ExprError>>, depth: usize) {
        if depth > 64 {
            return;
        }
        match v {
            Value::String(s) if has_template(s) => out.push(parse_template(s)),
            Value::Array(items) => items.iter().for_each(|i| go(i, out, depth + 1)),
            Value::Object(o) => o.values().for_each(|i| go(i, out, depth + 1)),
            _ => {}
        }
    }
    go(v, &mut out, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "incident": {"title": "Phish", "severity": "high", "entities": [{"kind": "url", "value": "http://x"}]},
            "variables": {"threshold": 70, "roles": ["ceo", "cfo"], "weights": {"a": 5}},
            "steps": {"sender": {"lookalike": true, "domains": ["examp1e.com"], "count": 0}},
            "triage": {"score": 75, "verdict": "malicious"}
        })
    }

    fn eval(s: &str) -> Value {
        parse_expr(s).unwrap_or_else(|e| panic!("{s}: {e}")).eval(&ctx())
    }

    #[test]
    fn paths_and_indexes() {
        assert_eq!(eval("incident.title"), json!("Phish"));
        assert_eq!(eval("incident.entities[0].kind"), json!("url"));
        assert_eq!(eval("incident.entities.0.value"), json!("http://x"));
        assert_eq!(eval("incident['title']"), json!("Phish"));
        assert_eq!(eval("incident.nope.deeper"), Value::Null);
        assert_eq!(eval("incident.entities[9]"), Value::Null);
        assert_eq!(eval("steps.sender.domains.length"), json!(1));
        assert_eq!(eval("variables.weights.a"), json!(5));
    }

    #[test]
    fn comparisons_and_logic() {
        assert_eq!(eval("triage.score >= variables.threshold"), json!(true));
        assert_eq!(eval("triage.score < 70"), json!(false));
        assert_eq!(eval("triage.score == 75.0"), json!(true));
        assert_eq!(eval("triage.verdict == 'malicious' and steps.sender.lookalike"), json!(true));
        assert_eq!(eval("triage.verdict != \"malicious\" or not steps.sender.lookalike"), json!(false));
        assert_eq!(eval("(triage.score > 90 || steps.sender.lookalike) && !steps.sender.count"), json!(true));
        assert_eq!(eval("'Phish' > 5"), json!(false));
        assert_eq!(eval("'b' > 'a'"), json!(true));
        assert_eq!(eval("-1 < 0"), json!(true));
    }

    #[test]
    fn contains_and_in() {
        assert_eq!(eval("variables.roles contains 'ceo'"), json!(true));
        assert_eq!(eval("'cfo' in variables.roles"), json!(true));
        assert_eq!(eval("'cto' not in variables.roles"), json!(true));
        assert_eq!(eval("incident.title contains 'hi'"), json!(true));
        assert_eq!(eval("incident.severity in ['high', 'critical']"), json!(true));
        assert_eq!(eval("variables.weights contains 'a'"), json!(true));
        assert_eq!(eval("5 in 'abc'"), json!(false));
    }

    #[test]
    fn truthiness() {
        for falsy in [json!(null), json!(false), json!(0), json!(""), json!([]), json!({})] {
            assert!(!truthy(&falsy), "{falsy}");
        }
        for t in [json!(true), json!(1), json!("x"), json!([0]), json!({"a": 1}), json!(-0.5)] {
            assert!(truthy(&t), "{t}");
        }
        assert!(parse_expr("steps.sender.domains").unwrap().test(&ctx()));
        assert!(!parse_expr("steps.missing").unwrap().test(&ctx()));
    }

    #[test]
    fn parse_errors_carry_offsets() {
        for bad in ["", "a ==", "(a", "a b", "'open", "a.", "a[", "a[-1]", "and", "a == = b", "1.2.3", "#", "{{x}}"] {
            assert!(parse_expr(bad).is_err(), "{bad:?} should not parse");
        }
        let e = parse_expr("incident.title == ").unwrap_err();
        assert_eq!(e.offset, 18);
        let deep = format!("{}a{}", "(".repeat(500), ")".repeat(500));
        assert!(parse_expr(&deep).is_err());
        let nots = "not ".repeat(1000) + "a";
        assert!(parse_expr(&nots).is_err());
    }

    #[test]
    fn templates_render_values_and_text() {
        let c = ctx();
        let t = parse_template("{{ steps.sender.domains }}").unwrap();
        assert_eq!(t.render(&c), json!(["examp1e.com"]));
        let t = parse_template("Score {{triage.score}} for {{ incident.title }}{{ incident.none }}!").unwrap();
        assert_eq!(t.render(&c), json!("Score 75 for Phish!"));
        assert_eq!(parse_template("plain").unwrap().render(&c), json!("plain"));
        assert_eq!(parse_template("{{ triage.score > 70 }}").unwrap().render(&c), json!(true));
        assert!(parse_template("{{ open").is_err());
        assert!(parse_template("{{ }}").is_err());
        let p = Parameter::parse(&json!({"a": ["{{ triage.verdict }}", 3], "b": "x{{variables.threshold}}"})).unwrap();
        assert_eq!(p.render(&c), json!({"a": ["malicious", 3], "b": "x70"}));
        // The first bad template in the value's order is the error.
        let e = Parameter::parse(&json!({"a": ["ok {{ x }}", "{{ open"], "b": "{{ }}"})).unwrap_err();
        assert_eq!(e, parse_template("{{ open").unwrap_err());
        let paths: Vec<String> = parse_template("{{ a.b }} {{ c[1] or d }}").unwrap().paths().iter().map(|p| p.to_string()).collect();
        assert_eq!(paths, ["a.b", "c[1]", "d"]);
    }

    /// The engine's context, the payload kept beside the object, reads what the object with the
    /// payload inside reads, for every kind of path.
    #[test]
    fn a_context_with_the_payload_beside_reads_as_one_with_it_inside() {
        let raw = json!({"subject": "Invoice", "length": 7, "@odata.type": "#alert", "to": ["a@x", "b@x"], "n": {"deep": [1, 2]}});
        let mut whole = ctx();
        whole["incident"]["raw"] = raw.clone();
        let tree = ctx();
        let beside = Context { tree: &tree, raw: &raw };
        for path in [
            "incident",
            "incident.raw",
            "incident.raw.subject",
            "incident.raw.length",
            "incident.raw.to.length",
            "incident.raw.to[1]",
            "incident.raw['@odata.type']",
            "incident.raw.n.deep[0]",
            "incident.raw.missing.x",
            "incident.title",
            "incident.entities[0].value",
            "variables.roles",
            "steps.sender.lookalike",
            "nothing.here",
        ] {
            let e = parse_expr(path).unwrap();
            assert_eq!(e.eval(&beside), e.eval(&whole), "{path}");
        }
        assert!(parse_expr("incident.raw.subject == 'Invoice' and 'b@x' in incident.raw.to").unwrap().test(&beside));
        assert_eq!(parse_template("Re: {{ incident.raw.subject }}").unwrap().render(&beside), json!("Re: Invoice"));
    }

    #[test]
    fn rendered_text_is_cut_and_marked() {
        let c = json!({"incident": {"raw": {"body": "é".repeat(100_000)}, "title": "t"}});
        let t = parse_template(&"{{ incident.raw }}".repeat(200)).unwrap();
        let out = t.render(&c);
        let text = out.as_str().unwrap();
        assert!(text.len() <= MAX_RENDERED_BYTES && text.ends_with(TRUNCATED_MARK), "{}", text.len());
        let whole = parse_template("{{ incident.raw.body }}").unwrap().render(&c);
        assert!(whole.as_str().unwrap().len() <= MAX_RENDERED_BYTES && whole.as_str().unwrap().ends_with(TRUNCATED_MARK));
        assert_eq!(parse_template("{{ incident.title }}!").unwrap().render(&c), json!("t!"));
        assert!(unbounded_path(&parse_template("{{ incident.raw }}").unwrap().paths()[0].clone()));
        assert!(!unbounded_path(parse_template("{{ incident.raw.x }}").unwrap().paths()[0]));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,200}") {
            if let Ok(e) = parse_expr(&s) { let _ = e.eval(&ctx()); }
            if let Ok(t) = parse_template(&s) { let _ = t.render(&ctx()); }
        }

        #[test]
        fn expression_shaped_input_never_panics(s in "[a-z0-9_.\\[\\]()'\" =!<>&|,-]{0,120}") {
            if let Ok(e) = parse_expr(&s) { let _ = e.eval(&ctx()); }
            let _ = parse_template(&format!("{{{{{s}}}}}"));
        }
    }
}
