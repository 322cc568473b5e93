//! Node label selectors for `IPPool.nodeSelector`.
//!
//! Two syntaxes are accepted, and may be mixed:
//!
//! - Kubernetes label selector syntax: requirements joined by `,` —
//!   `zone = a`, `zone == a`, `zone != a`, `zone in (a, b)`, `zone notin (a, b)`,
//!   `zone` (the label exists), `!zone` (it does not).
//! - Calico's selector syntax, which Calico users write: `zone == 'a' && rack != "r1"`,
//!   `zone in {'a', 'b'}`, `zone not in {'a'}`, `has(zone)`, `!has(zone)`, `all()`,
//!   with `&&`, `||`, `!` and parentheses.
//!
//! An empty selector (or `all()`) matches every node. `!=` and `notin` match a node that
//! lacks the label, as in both Kubernetes and Calico.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// A parsed selector; it keeps its source text, which is what gets stored.
#[derive(Clone, Debug)]
pub struct Selector {
    source: String,
    expr: Expr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    All,
    Has(String),
    Eq(String, String),
    Ne(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    fn eval(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Expr::All => true,
            Expr::Has(k) => labels.contains_key(k),
            Expr::Eq(k, v) => labels.get(k) == Some(v),
            Expr::Ne(k, v) => labels.get(k) != Some(v),
            Expr::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
            Expr::NotIn(k, set) => !labels.get(k).is_some_and(|v| set.contains(v)),
            Expr::Not(e) => !e.eval(labels),
            Expr::And(es) => es.iter().all(|e| e.eval(labels)),
            Expr::Or(es) => es.iter().any(|e| e.eval(labels)),
        }
    }
}

impl Selector {
    /// Matches every node.
    pub fn all() -> Self {
        Selector {
            source: String::new(),
            expr: Expr::All,
        }
    }

    pub fn parse(source: &str) -> Result<Self, ModelError> {
        let mut p = Parser {
            src: source,
            pos: 0,
        };
        p.skip_ws();
        if p.at_end() {
            return Ok(Selector::all());
        }
        let expr = p.or()?;
        p.skip_ws();
        if !p.at_end() {
            return Err(p.error("unexpected text"));
        }
        Ok(Selector {
            source: source.trim().to_owned(),
            expr,
        })
    }

    /// Whether a node with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.expr.eval(labels)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether this selects every node.
    pub fn is_all(&self) -> bool {
        self.expr == Expr::All
    }
}

impl Default for Selector {
    fn default() -> Self {
        Selector::all()
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl Eq for Selector {}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.source.is_empty() {
            f.write_str("all()")
        } else {
            f.write_str(&self.source)
        }
    }
}

impl FromStr for Selector {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        Selector::parse(s)
    }
}

impl Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Selector::parse(&s).map_err(serde::de::Error::custom)
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> ModelError {
        ModelError::InvalidSelector {
            selector: self.src.to_owned(),
            detail: format!("{what} at offset {}", self.pos),
        }
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.src.len() - trimmed.len();
    }

    /// Consumes `tok` (after whitespace) if it is next.
    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    /// Consumes the keyword `kw` if it is next and not the start of a longer word.
    fn eat_word(&mut self, kw: &str) -> bool {
        self.skip_ws();
        let rest = self.rest();
        if rest.starts_with(kw) && !rest[kw.len()..].starts_with(is_word_char) {
            self.pos += kw.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, ModelError> {
        let mut terms = vec![self.and()?];
        while self.eat("||") {
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Expr, ModelError> {
        let mut terms = vec![self.unary()?];
        while self.eat("&&") || self.eat(",") {
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn unary(&mut self) -> Result<Expr, ModelError> {
        self.skip_ws();
        if self.rest().starts_with('!') && !self.rest().starts_with("!=") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let e = self.or()?;
            if !self.eat(")") {
                return Err(self.error("expected ')'"));
            }
            return Ok(e);
        }
        if self.eat_word("all") {
            if self.eat("(") && self.eat(")") {
                return Ok(Expr::All);
            }
            // A label called "all".
            return self.requirement("all".to_owned());
        }
        if self.eat_word("has") {
            if self.eat("(") {
                let key = self.key()?;
                if !self.eat(")") {
                    return Err(self.error("expected ')' after has(key"));
                }
                return Ok(Expr::Has(key));
            }
            return self.requirement("has".to_owned());
        }
        let key = self.key()?;
        self.requirement(key)
    }

    /// What follows a label key.
    fn requirement(&mut self, key: String) -> Result<Expr, ModelError> {
        if self.eat("==") || self.eat("=") {
            let v = self.value()?;
            return Ok(Expr::Eq(key, v));
        }
        if self.eat("!=") {
            let v = self.value()?;
            return Ok(Expr::Ne(key, v));
        }
        if self.eat_word("in") {
            return Ok(Expr::In(key, self.set()?));
        }
        if self.eat_word("notin") {
            return Ok(Expr::NotIn(key, self.set()?));
        }
        if self.eat_word("not") {
            if self.eat_word("in") {
                return Ok(Expr::NotIn(key, self.set()?));
            }
            return Err(self.error("expected 'in' after 'not'"));
        }
        // A bare key: Kubernetes' existence requirement.
        Ok(Expr::Has(key))
    }

    fn key(&mut self) -> Result<String, ModelError> {
        self.skip_ws();
        let len = self
            .rest()
            .find(|c: char| !is_word_char(c))
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Err(self.error("expected a label key"));
        }
        let key = self.rest()[..len].to_owned();
        self.pos += len;
        Ok(key)
    }

    fn value(&mut self) -> Result<String, ModelError> {
        self.skip_ws();
        let rest = self.rest();
        if let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
            let body = &rest[1..];
            let end = body
                .find(q)
                .ok_or_else(|| self.error("unterminated string"))?;
            let v = body[..end].to_owned();
            self.pos += end + 2;
            return Ok(v);
        }
        // Kubernetes allows an empty value (`a=`) and bare values.
        let len = rest.find(|c: char| !is_word_char(c)).unwrap_or(rest.len());
        let v = rest[..len].to_owned();
        self.pos += len;
        Ok(v)
    }

    fn set(&mut self) -> Result<BTreeSet<String>, ModelError> {
        let close = if self.eat("(") {
            ")"
        } else if self.eat("{") {
            "}"
        } else {
            return Err(self.error("expected '(' or '{' to start a set"));
        };
        let mut set = BTreeSet::new();
        if self.eat(close) {
            return Ok(set);
        }
        loop {
            set.insert(self.value()?);
            if self.eat(close) {
                return Ok(set);
            }
            if !self.eat(",") {
                return Err(self.error("expected ',' or the end of the set"));
            }
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn table() {
        let node = labels(&[("zone", "a"), ("rack", "r1"), ("kubernetes.io/os", "linux")]);
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("all()", true),
            ("zone == a", true),
            ("zone=a", true),
            ("zone = b", false),
            ("zone != b", true),
            ("missing != b", true),
            ("zone in (a, b)", true),
            ("zone in (b)", false),
            ("zone notin (b,c)", true),
            ("missing notin (b)", true),
            ("zone", true),
            ("!zone", false),
            ("!missing", true),
            ("zone=a,rack=r1", true),
            ("zone=a,rack=r2", false),
            ("kubernetes.io/os == linux", true),
            ("zone == 'a' && rack == \"r1\"", true),
            ("zone == 'b' || rack == 'r1'", true),
            ("zone in {'a', 'b'}", true),
            ("zone not in {'a'}", false),
            ("has(zone)", true),
            ("!has(zone)", false),
            ("!(zone == 'a' && has(rack))", false),
            ("(zone == 'b' || zone == 'a') && !has(gpu)", true),
            ("zone == ''", false),
        ];
        for (src, want) in cases {
            let s = Selector::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(s.matches(&node), *want, "{src}");
        }
    }

    #[test]
    fn errors_name_the_selector() {
        for bad in [
            "zone ==",
            "zone in a",
            "has(zone",
            "zone == 'a",
            "zone not a",
            "(zone",
            "zone == a )",
        ] {
            match Selector::parse(bad) {
                Err(ModelError::InvalidSelector { selector, .. }) => assert_eq!(selector, bad),
                other => {
                    // `zone ==` parses as an empty value in Kubernetes syntax.
                    assert_eq!(bad, "zone ==", "{bad}: {other:?}");
                }
            }
        }
    }

    #[test]
    fn serde_keeps_the_source() {
        let s: Selector = serde_json::from_str(r#""zone in {'a'}""#).unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), r#""zone in {'a'}""#);
        assert!(serde_json::from_str::<Selector>(r#""zone in""#).is_err());
    }
}
