//! Cluster query language, the part `memberOf` placement constraints use:
//! which container instances (nodes) a task may go to, by their
//! attributes.
//!
//! ```text
//! attribute:ecs.availability-zone == eu-1
//! attribute:zone in [eu-1, eu-2] and attribute:tier != spot
//! (attribute:gpu exists or instanceId == 3f2a...) and not attribute:old exists
//! ```
//!
//! A condition is a subject (`attribute:NAME`, or `instanceId` /
//! `ec2InstanceId` for the node's id), an operator (`==` `equals`, `!=`
//! `not_equals`, `>` `>=` `<` `<=` (as numbers when both sides are,
//! otherwise as text), `exists` `!exists`, `in` `not_in` a `[list]`, `=~`
//! `matches` a regular expression) and a value; conditions combine with
//! `and` / `&&`, `or` / `||`, `not` / `!` and parentheses. An attribute a
//! node lacks matches only `!exists`, `!=`, `not_equals` and `not_in`.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed expression.
#[derive(Debug, Clone)]
pub enum Expr {
    /// Both.
    And(Box<Expr>, Box<Expr>),
    /// Either.
    Or(Box<Expr>, Box<Expr>),
    /// Not.
    Not(Box<Expr>),
    /// One condition.
    Cond(Subject, Op),
}

/// What a condition looks at.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// `attribute:NAME`.
    Attribute(String),
    /// `instanceId`, `ec2InstanceId`: the node's id.
    Instance,
}

/// A condition's operator and value.
#[derive(Debug, Clone)]
pub enum Op {
    /// `==`
    Eq(String),
    /// `!=`
    Ne(String),
    /// `>`, `>=`, `<`, `<=`: the ordering wanted, and whether equal passes.
    Cmp(std::cmp::Ordering, bool, String),
    /// `exists`
    Exists,
    /// `!exists`
    Absent,
    /// `in [..]`
    In(Vec<String>),
    /// `not_in [..]`
    NotIn(Vec<String>),
    /// `=~`
    Matches(regex::Regex),
}

/// Why an expression cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const OPERATORS: &str =
    "==, equals, !=, not_equals, >, >=, <, <=, exists, !exists, in, not_in, =~ or matches";

/// Splits into words, brackets, parentheses and commas.
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in s.chars() {
        if c.is_whitespace() || "()[],".contains(c) {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

struct Parser {
    tokens: Vec<String>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(String::as_str)
    }

    fn next(&mut self) -> Option<String> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.and()?;
        while matches!(self.peek(), Some("or" | "||")) {
            self.at += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.unary()?;
        while matches!(self.peek(), Some("and" | "&&")) {
            self.at += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        match self.peek() {
            Some("not" | "!") => {
                self.at += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some("(") => {
                self.at += 1;
                let e = self.or()?;
                match self.next().as_deref() {
                    Some(")") => Ok(e),
                    other => Err(ParseError(format!(
                        "expected ')' to close '(', found {}",
                        shown(other)
                    ))),
                }
            }
            _ => self.condition(),
        }
    }

    fn condition(&mut self) -> Result<Expr, ParseError> {
        let subject = match self.next() {
            Some(s) if s.starts_with("attribute:") && s.len() > "attribute:".len() => {
                Subject::Attribute(s["attribute:".len()..].to_string())
            }
            Some(s) if s == "instanceId" || s == "ec2InstanceId" => Subject::Instance,
            other => {
                return Err(ParseError(format!(
                    "expected attribute:NAME, instanceId or ec2InstanceId, found {}",
                    shown(other.as_deref())
                )))
            }
        };
        let op = self
            .next()
            .ok_or_else(|| ParseError(format!("expected an operator ({OPERATORS}) at the end")))?;
        let op = match op.as_str() {
            "exists" => Op::Exists,
            "!exists" => Op::Absent,
            "in" => Op::In(self.list()?),
            "not_in" => Op::NotIn(self.list()?),
            _ => {
                let value = self.value(&op)?;
                use std::cmp::Ordering::{Greater, Less};
                match op.as_str() {
                    "==" | "equals" => Op::Eq(value),
                    "!=" | "not_equals" => Op::Ne(value),
                    ">" => Op::Cmp(Greater, false, value),
                    ">=" => Op::Cmp(Greater, true, value),
                    "<" => Op::Cmp(Less, false, value),
                    "<=" => Op::Cmp(Less, true, value),
                    "=~" | "matches" => {
                        Op::Matches(regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                            ParseError(format!("{value:?} is not a regular expression: {e}"))
                        })?)
                    }
                    other => {
                        return Err(ParseError(format!(
                            "{other:?} is not an operator; use one of {OPERATORS}"
                        )))
                    }
                }
            }
        };
        Ok(Expr::Cond(subject, op))
    }

    fn value(&mut self, op: &str) -> Result<String, ParseError> {
        match self.next() {
            Some(v) if !"()[],".contains(v.as_str()) => Ok(v),
            other => Err(ParseError(format!(
                "expected a value after {op:?}, found {}",
                shown(other.as_deref())
            ))),
        }
    }

    fn list(&mut self) -> Result<Vec<String>, ParseError> {
        if self.next().as_deref() != Some("[") {
            return Err(ParseError(
                "in and not_in take a list: [value, value, ...]".into(),
            ));
        }
        let mut out = Vec::new();
        loop {
            match self.next().as_deref() {
                Some("]") if out.is_empty() => {
                    return Err(ParseError("the list [] is empty".into()))
                }
                Some(v) if !"()[],".contains(v) => out.push(v.to_string()),
                other => {
                    return Err(ParseError(format!(
                        "expected a value in the list, found {}",
                        shown(other)
                    )))
                }
            }
            match self.next().as_deref() {
                Some(",") => continue,
                Some("]") => return Ok(out),
                other => {
                    return Err(ParseError(format!(
                        "expected ',' or ']' in the list, found {}",
                        shown(other)
                    )))
                }
            }
        }
    }
}

fn shown(t: Option<&str>) -> String {
    match t {
        Some(t) => format!("{t:?}"),
        None => "the end".into(),
    }
}

/// Parses an expression (at most 2000 characters, as ECS allows).
pub fn parse(s: &str) -> Result<Expr, ParseError> {
    if s.len() > 2000 {
        return Err(ParseError(
            "the expression is longer than 2000 characters".into(),
        ));
    }
    let mut p = Parser {
        tokens: tokens(s),
        at: 0,
    };
    if p.tokens.is_empty() {
        return Err(ParseError(
            "the expression is empty; say, attribute:ecs.availability-zone == local".into(),
        ));
    }
    let e = p.or()?;
    match p.next() {
        None => Ok(e),
        Some(t) => Err(ParseError(format!(
            "unexpected {t:?} after a complete condition (join conditions with and / or)"
        ))),
    }
}

fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        _ => a.cmp(b),
    }
}

impl Expr {
    /// Whether a node with this id and these attributes matches.
    pub fn matches(&self, id: &str, attributes: &BTreeMap<String, String>) -> bool {
        match self {
            Expr::And(a, b) => a.matches(id, attributes) && b.matches(id, attributes),
            Expr::Or(a, b) => a.matches(id, attributes) || b.matches(id, attributes),
            Expr::Not(e) => !e.matches(id, attributes),
            Expr::Cond(subject, op) => {
                let value = match subject {
                    Subject::Attribute(name) => attributes.get(name).map(String::as_str),
                    Subject::Instance => Some(id),
                };
                match (op, value) {
                    (Op::Exists, v) => v.is_some(),
                    (Op::Absent, v) => v.is_none(),
                    (Op::Ne(_) | Op::NotIn(_), None) => true,
                    (_, None) => false,
                    (Op::Eq(x), Some(v)) => v == x,
                    (Op::Ne(x), Some(v)) => v != x,
                    (Op::Cmp(want, or_equal, x), Some(v)) => {
                        let o = compare(v, x);
                        o == *want || (*or_equal && o == std::cmp::Ordering::Equal)
                    }
                    (Op::In(xs), Some(v)) => xs.iter().any(|x| x == v),
                    (Op::NotIn(xs), Some(v)) => !xs.iter().any(|x| x == v),
                    (Op::Matches(re), Some(v)) => re.is_match(v),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn m(expr: &str, pairs: &[(&str, &str)]) -> bool {
        parse(expr).unwrap().matches("n1", &attrs(pairs))
    }

    #[test]
    fn conditions_and_combinations() {
        let eu = [("zone", "eu-1"), ("cores", "16")];
        assert!(m("attribute:zone == eu-1", &eu));
        assert!(!m("attribute:zone equals eu-2", &eu));
        assert!(m("attribute:zone != eu-2", &eu));
        assert!(m("attribute:missing != x", &eu));
        assert!(!m("attribute:missing == x", &eu));
        assert!(m("attribute:cores > 8", &eu));
        assert!(
            !m("attribute:cores < 9", &eu),
            "16 < 9 as numbers, not as text"
        );
        assert!(m("attribute:cores >= 16 && attribute:zone exists", &eu));
        assert!(m("attribute:gpu !exists", &eu));
        assert!(m("attribute:zone in [eu-2, eu-1]", &eu));
        assert!(m("attribute:zone not_in [us-1]", &eu));
        assert!(m("attribute:zone =~ eu-.*", &eu));
        assert!(
            !m("attribute:zone =~ eu", &eu),
            "a match is of the whole value"
        );
        assert!(m("instanceId == n1", &eu));
        assert!(m(
            "(attribute:zone == us-1 or attribute:cores == 16) and not attribute:gpu exists",
            &eu
        ));
        assert!(!m("attribute:zone == us-1 || attribute:zone == us-2", &eu));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = |s: &str| parse(s).unwrap_err().0;
        assert!(err("").contains("empty"));
        assert!(err("zone == eu-1").contains("expected attribute:NAME"));
        assert!(err("attribute:zone ~ eu").contains("is not an operator"));
        assert!(err("attribute:zone ==").contains("expected a value"));
        assert!(err("attribute:zone in eu-1").contains("take a list"));
        assert!(err("attribute:zone in [eu-1").contains("expected ',' or ']'"));
        assert!(err("(attribute:zone exists").contains("expected ')'"));
        assert!(err("attribute:zone exists attribute:x exists").contains("join conditions"));
        assert!(err("attribute:z =~ *a").contains("not a regular expression"));
    }
}
