//! A small YAML node tree with positions and the raw text of every scalar.
//!
//! Prometheus decodes rule and test files with Go's yaml packages, which keep a
//! scalar's original text when it lands in a string field (`values: 0x10` is the
//! series notation "0x10", not the hex number 16) and report errors by line. serde
//! would resolve scalar types first and lose both, so the files are read from the
//! parser's event stream (granit-parser, the parser under serde-saphyr) into this
//! tree, and the typed models in `rulefile` and `unittest` are built from it with
//! Prometheus's strictness: unknown keys are errors that name key and line.

use std::collections::HashMap;
use std::fmt;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span};

/// A YAML node and where it starts (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub col: usize,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `plain` is false for quoted and block scalars, which are never null, numbers or
    /// booleans.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A YAML or decoding error at a position.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct YamlError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

impl YamlError {
    pub fn at(node: &Node, msg: impl Into<String>) -> Self {
        YamlError {
            line: node.line,
            col: node.col,
            msg: msg.into(),
        }
    }
}

/// Parses the first document of `text`. An empty document is a null scalar.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut b = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
    };
    loop {
        let (ev, span) = b.next()?;
        match ev {
            Event::StreamStart | Event::DocumentStart(..) => continue,
            Event::StreamEnd | Event::DocumentEnd => {
                return Ok(Node {
                    line: 1,
                    col: 1,
                    kind: NodeKind::Scalar {
                        text: String::new(),
                        plain: true,
                    },
                });
            }
            other => return b.node(other, span),
        }
    }
}

struct Builder<'a> {
    parser: Parser<'a, serde_saphyr::granit_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), YamlError> {
        loop {
            match self.parser.next_event() {
                None => return Ok((Event::StreamEnd, Span::default())),
                Some(Err(e)) => {
                    let m = e.marker();
                    return Err(YamlError {
                        line: m.line(),
                        col: m.col() + 1,
                        msg: e.info().to_string(),
                    });
                }
                #[allow(unreachable_patterns)]
                Some(Ok((Event::Comment(..), _))) => continue,
                Some(Ok(pair)) => return Ok(pair),
            }
        }
    }

    fn node(&mut self, ev: Event<'a>, span: Span) -> Result<Node, YamlError> {
        let (line, col) = (span.start.line(), span.start.col() + 1);
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, _) => (
                Node {
                    line,
                    col,
                    kind: NodeKind::Scalar {
                        text: text.into_owned(),
                        plain: matches!(style, ScalarStyle::Plain),
                    },
                },
                anchor,
            ),
            Event::SequenceStart(_, anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, span)?);
                }
                (
                    Node {
                        line,
                        col,
                        kind: NodeKind::Seq(items),
                    },
                    anchor,
                )
            }
            Event::MappingStart(_, anchor, _) => {
                let mut entries: Vec<(Node, Node)> = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::MappingEnd) {
                        break;
                    }
                    let key = self.node(ev, span)?;
                    let (ev, span) = self.next()?;
                    let value = self.node(ev, span)?;
                    let dup = key.scalar().and_then(|k| {
                        entries
                            .iter()
                            .find(|(p, _)| p.scalar() == Some(k))
                            .map(|(p, _)| (k, p.line))
                    });
                    if let Some((k, prev_line)) = dup {
                        return Err(YamlError::at(
                            &key,
                            format!("mapping key {k:?} already defined at line {prev_line}"),
                        ));
                    }
                    entries.push((key, value));
                }
                (
                    Node {
                        line,
                        col,
                        kind: NodeKind::Map(entries),
                    },
                    anchor,
                )
            }
            Event::Alias(id) => {
                return self.anchors.get(&id).cloned().ok_or(YamlError {
                    line,
                    col,
                    msg: "unknown anchor".into(),
                });
            }
            _ => {
                return Err(YamlError {
                    line,
                    col,
                    msg: "unexpected YAML event".into(),
                });
            }
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

impl Node {
    /// The scalar's text, if this is a scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for `~`, `null` and empty plain scalars.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The YAML tag Go's decoder would name in a type error.
    fn tag(&self) -> &'static str {
        match &self.kind {
            NodeKind::Seq(_) => "!!seq",
            NodeKind::Map(_) => "!!map",
            NodeKind::Scalar { .. } if self.is_null() => "!!null",
            NodeKind::Scalar { plain: false, .. } => "!!str",
            NodeKind::Scalar { text, .. } => {
                if text.parse::<i64>().is_ok() {
                    "!!int"
                } else if text.parse::<f64>().is_ok() {
                    "!!float"
                } else if matches!(text.as_str(), "true" | "false" | "True" | "False") {
                    "!!bool"
                } else {
                    "!!str"
                }
            }
        }
    }

    fn type_error(&self, value_desc: &str, go_type: &str) -> YamlError {
        let shown = match self.scalar() {
            Some(t) if !self.is_null() => format!(" `{t}`"),
            _ => String::new(),
        };
        YamlError::at(
            self,
            format!("cannot unmarshal {}{shown} into {go_type}", self.tag()),
        )
        .with_context(value_desc)
    }

    /// A string field: any scalar's raw text; null is the empty string.
    pub fn string(&self, what: &str) -> Result<String, YamlError> {
        if self.is_null() {
            return Ok(String::new());
        }
        match self.scalar() {
            Some(t) => Ok(t.to_string()),
            None => Err(self.type_error(what, "string")),
        }
    }

    /// A float field.
    pub fn float(&self, what: &str) -> Result<f64, YamlError> {
        if self.is_null() {
            return Ok(0.0);
        }
        let t = self
            .scalar()
            .ok_or_else(|| self.type_error(what, "float64"))?;
        parse_yaml_float(t).ok_or_else(|| self.type_error(what, "float64"))
    }

    /// An unsigned integer field.
    pub fn uint(&self, what: &str) -> Result<u64, YamlError> {
        if self.is_null() {
            return Ok(0);
        }
        let t = self.scalar().ok_or_else(|| self.type_error(what, "int"))?;
        t.parse::<u64>().map_err(|_| self.type_error(what, "int"))
    }

    /// A sequence field; null is empty.
    pub fn seq(&self, what: &str) -> Result<&[Node], YamlError> {
        match &self.kind {
            NodeKind::Seq(items) => Ok(items),
            _ if self.is_null() => Ok(&[]),
            _ => Err(self.type_error(what, "[]")),
        }
    }

    /// A `map[string]string` field, in file order.
    pub fn string_map(&self, what: &str) -> Result<Vec<(Node, String)>, YamlError> {
        let entries = match &self.kind {
            NodeKind::Map(e) => e,
            _ if self.is_null() => return Ok(Vec::new()),
            _ => return Err(self.type_error(what, "map[string]string")),
        };
        entries
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.string(what)?)))
            .collect()
    }

    /// The fields of a struct-like mapping. Keys outside `known` are errors worded as
    /// Go's strict decoder words them; every one is reported, not just the first.
    pub fn fields<'n>(
        &'n self,
        go_type: &str,
        known: &[&str],
    ) -> Result<HashMap<&'n str, &'n Node>, Vec<YamlError>> {
        let (out, errs) = self.fields_collect(go_type, known);
        if errs.is_empty() { Ok(out) } else { Err(errs) }
    }

    /// Like [`Node::fields`], but returns the known fields even when there are unknown
    /// ones, so decoding can go on and report the problems of nested nodes too.
    pub fn fields_collect<'n>(
        &'n self,
        go_type: &str,
        known: &[&str],
    ) -> (HashMap<&'n str, &'n Node>, Vec<YamlError>) {
        let entries = match &self.kind {
            NodeKind::Map(e) => e.as_slice(),
            _ if self.is_null() => &[],
            _ => return (HashMap::new(), vec![self.type_error("", go_type)]),
        };
        let mut out = HashMap::new();
        let mut errs = Vec::new();
        for (k, v) in entries {
            let name = k.scalar().unwrap_or("");
            if known.contains(&name) {
                out.insert(name, v);
            } else {
                errs.push(YamlError::at(
                    k,
                    format!("field {name} not found in type {go_type}"),
                ));
            }
        }
        (out, errs)
    }
}

impl YamlError {
    fn with_context(mut self, what: &str) -> Self {
        if !what.is_empty() {
            self.msg = format!("{} ({what})", self.msg);
        }
        self
    }
}

/// YAML 1.1/1.2 float spellings Go's decoder accepts, plus plain decimal forms.
pub fn parse_yaml_float(t: &str) -> Option<f64> {
    match t {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Some(f64::NAN),
        _ => {
            let cleaned = t.replace('_', "");
            if let Some(hex) = cleaned.strip_prefix("0x") {
                return i64::from_str_radix(hex, 16).ok().map(|v| v as f64);
            }
            let lower = cleaned.to_ascii_lowercase();
            if lower.contains("inf") || lower.contains("nan") {
                return None;
            }
            cleaned.parse::<f64>().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_raw_scalar_text_and_positions() {
        let n = parse("a: 0x10\nb:\n  - 'x'\n  - 1.50\nc: ~\n").unwrap();
        let f = n.fields("T", &["a", "b", "c"]).unwrap();
        assert_eq!(f["a"].string("").unwrap(), "0x10");
        let b = f["b"].seq("").unwrap();
        assert_eq!(b[0].string("").unwrap(), "x");
        assert_eq!(b[1].string("").unwrap(), "1.50");
        assert_eq!((b[1].line, b[1].col), (4, 5));
        assert!(f["c"].is_null());
    }

    #[test]
    fn unknown_and_duplicate_keys_are_errors() {
        let n = parse("a: 1\nzz: 2\nyy: 3\n").unwrap();
        let errs = n.fields("rulefmt.RuleGroup", &["a"]).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(
            errs[0].to_string(),
            "line 2: field zz not found in type rulefmt.RuleGroup"
        );
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.msg.contains("already defined at line 1"));
    }

    #[test]
    fn anchors_and_syntax_errors() {
        let n = parse("a: &x {k: v}\nb: *x\n").unwrap();
        let f = n.fields("T", &["a", "b"]).unwrap();
        assert_eq!(f["a"].kind, f["b"].kind);
        assert!(parse("a: [1, 2\n").is_err());
        assert!(parse("").unwrap().is_null());
    }
}
