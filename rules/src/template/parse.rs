//! Lexer and parser for the Go text/template subset Prometheus annotations use:
//! text, `{{ pipeline }}` actions with `{{-`/`-}}` trimming and comments, variable
//! declaration and assignment, `if`/`else if`/`else`, `with`/`else with`, `range`
//! (with `$k, $v :=`), parenthesised pipelines, and field chains on `.`, `$var` and
//! `(...)`. Like Go, it reports undefined variables and functions when parsing.

use super::TemplateError;
use super::lex::{Chunk, Tok, lex_err, split_chunks};

#[derive(Debug, Clone)]
pub(crate) enum Item {
    Text(String),
    Action(Pipe),
    If {
        pipe: Pipe,
        then: Vec<Item>,
        els: Vec<Item>,
    },
    With {
        pipe: Pipe,
        then: Vec<Item>,
        els: Vec<Item>,
    },
    Range {
        pipe: Pipe,
        body: Vec<Item>,
        els: Vec<Item>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Pipe {
    pub line: usize,
    pub decl: Vec<String>,
    pub assign: bool,
    pub cmds: Vec<Cmd>,
}

/// One command of a pipeline, with what Go's errors cite: the 1-based line, the
/// 0-based byte column of its first token, and its source text.
#[derive(Debug, Clone)]
pub(crate) struct Cmd {
    pub args: Vec<Arg>,
    pub line: usize,
    pub col: usize,
    pub text: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Func(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Sub(Box<Pipe>, Vec<String>),
}

/// The keyword (`end` or `else`) that closed a list, and its line.
type EndMarker = (String, usize);

pub(crate) struct Parser<'a> {
    name: &'a str,
    src: &'a str,
    funcs: &'a dyn Fn(&str) -> bool,
    chunks: Vec<Chunk>,
    pos: usize,
    scopes: Vec<Vec<String>>,
}

impl<'a> Parser<'a> {
    pub fn parse(
        name: &'a str,
        text: &'a str,
        funcs: &'a dyn Fn(&str) -> bool,
    ) -> Result<Vec<Item>, TemplateError> {
        let chunks = split_chunks(name, text)?;
        let mut p = Parser {
            name,
            src: text,
            funcs,
            chunks,
            pos: 0,
            scopes: vec![vec!["$".into()]],
        };
        let (items, end) = p.list()?;
        if let Some((what, line)) = end {
            return Err(lex_err(name, line, format!("unexpected {{{{{what}}}}}")));
        }
        Ok(items)
    }

    fn err(&self, line: usize, msg: impl Into<String>) -> TemplateError {
        lex_err(self.name, line, msg)
    }

    /// Items up to an `end`/`else` (returned with its tokens' keyword) or the input end.
    fn list(&mut self) -> Result<(Vec<Item>, Option<EndMarker>), TemplateError> {
        let mut items = Vec::new();
        while self.pos < self.chunks.len() {
            let idx = self.pos;
            self.pos += 1;
            let (toks, spans, line) = match &self.chunks[idx] {
                Chunk::Text(t) => {
                    items.push(Item::Text(t.clone()));
                    continue;
                }
                Chunk::Action(toks, spans, line) => (toks.clone(), spans.clone(), *line),
            };
            match toks.first() {
                Some(Tok::Ident(k)) if k == "end" => {
                    if toks.len() > 1 {
                        return Err(self.err(line, "unexpected token in end"));
                    }
                    return Ok((items, Some(("end".into(), line))));
                }
                Some(Tok::Ident(k)) if k == "else" => {
                    // Leave the rest (`else if ...`) for the caller.
                    self.pos -= 1;
                    return Ok((items, Some(("else".into(), line))));
                }
                Some(Tok::Ident(k)) if matches!(k.as_str(), "if" | "with" | "range") => {
                    let k = k.clone();
                    items.push(self.control(&k, &toks[1..], &spans[1..], line)?);
                }
                Some(Tok::Ident(k))
                    if matches!(
                        k.as_str(),
                        "define" | "template" | "block" | "break" | "continue"
                    ) =>
                {
                    return Err(self.err(line, format!("{k} is not supported in alert templates")));
                }
                None => return Err(self.err(line, "missing value for command")),
                _ => {
                    let pipe = self.pipeline(&toks, &spans, line, true)?;
                    items.push(Item::Action(pipe));
                }
            }
        }
        Ok((items, None))
    }

    fn control(
        &mut self,
        kw: &str,
        toks: &[Tok],
        spans: &[(usize, usize)],
        line: usize,
    ) -> Result<Item, TemplateError> {
        self.scopes.push(Vec::new());
        let pipe = self.pipeline(toks, spans, line, true)?;
        if pipe.cmds.is_empty() {
            return Err(self.err(line, format!("missing value for {kw}")));
        }
        let (then, end) = self.list()?;
        self.scopes.pop();
        let mut els = Vec::new();
        match end {
            None => return Err(self.err(line, "unexpected EOF")),
            Some((e, _)) if e == "end" => {}
            Some((_, eline)) => {
                // An `else` chunk: plain, or `else if`/`else with` chained on one `end`.
                let Chunk::Action(etoks, espans, _) = &self.chunks[self.pos] else {
                    return Err(self.err(eline, "unexpected else"));
                };
                let (etoks, espans) = (etoks.clone(), espans.clone());
                self.pos += 1;
                match etoks.get(1) {
                    None => {
                        self.scopes.push(Vec::new());
                        let (e, end2) = self.list()?;
                        self.scopes.pop();
                        if !matches!(end2, Some((ref k, _)) if k == "end") {
                            return Err(self.err(eline, "expected end; found else or EOF"));
                        }
                        els = e;
                    }
                    Some(Tok::Ident(k)) if (k == "if" || k == "with") && kw != "range" => {
                        let k = k.clone();
                        els.push(self.control(&k, &etoks[2..], &espans[2..], eline)?);
                    }
                    _ => return Err(self.err(eline, "unexpected token after else")),
                }
            }
        }
        Ok(match kw {
            "if" => Item::If { pipe, then, els },
            "with" => Item::With { pipe, then, els },
            _ => Item::Range {
                pipe,
                body: then,
                els,
            },
        })
    }

    fn declared(&self, v: &str) -> bool {
        self.scopes.iter().any(|s| s.iter().any(|x| x == v))
    }

    /// The command made of tokens `first..end`, located and with its source text.
    fn cmd(&self, args: Vec<Arg>, spans: &[(usize, usize)], first: usize, end: usize) -> Cmd {
        let (start, stop) = (spans[first].0, spans[end - 1].1);
        let before = &self.src[..start];
        let line = 1 + before.matches('\n').count();
        let col = before.rfind('\n').map_or(start, |nl| start - (nl + 1));
        let text = self.src[start..stop]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Cmd {
            args,
            line,
            col,
            text,
        }
    }

    fn pipeline(
        &mut self,
        toks: &[Tok],
        spans: &[(usize, usize)],
        line: usize,
        top: bool,
    ) -> Result<Pipe, TemplateError> {
        let mut i = 0;
        let mut decl = Vec::new();
        let mut assign = false;
        // `$x :=`, `$x =`, `$k, $v :=`.
        if top {
            let mut j = 0;
            let mut names = Vec::new();
            while let Some(Tok::Var(v)) = toks.get(j) {
                names.push(v.clone());
                match toks.get(j + 1) {
                    Some(Tok::Comma) => j += 2,
                    Some(Tok::Declare) | Some(Tok::Assign) => {
                        assign = toks.get(j + 1) == Some(&Tok::Assign);
                        i = j + 2;
                        decl = names.clone();
                        break;
                    }
                    _ => break,
                }
            }
            if assign {
                for v in &decl {
                    if !self.declared(v) {
                        return Err(self.err(line, format!("undefined variable {v:?}")));
                    }
                }
            }
        }
        let mut cmds = Vec::new();
        let mut cur: Vec<Arg> = Vec::new();
        let mut cur_first = i;
        while i < toks.len() {
            let t = &toks[i];
            i += 1;
            match t {
                Tok::Pipe => {
                    if cur.is_empty() {
                        return Err(self.err(line, "missing command"));
                    }
                    let args = std::mem::take(&mut cur);
                    cmds.push(self.cmd(args, spans, cur_first, i - 1));
                    cur_first = i;
                }
                Tok::Open => {
                    let mut depth = 1;
                    let start = i;
                    while i < toks.len() && depth > 0 {
                        match toks[i] {
                            Tok::Open => depth += 1,
                            Tok::Close => depth -= 1,
                            _ => {}
                        }
                        i += 1;
                    }
                    if depth > 0 {
                        return Err(self.err(line, "unclosed left paren"));
                    }
                    let inner =
                        self.pipeline(&toks[start..i - 1], &spans[start..i - 1], line, false)?;
                    let mut fields = Vec::new();
                    while let Some(Tok::Field(f)) = toks.get(i) {
                        fields.push(f.clone());
                        i += 1;
                    }
                    cur.push(Arg::Sub(Box::new(inner), fields));
                }
                Tok::Close => return Err(self.err(line, "unexpected right paren")),
                Tok::Comma | Tok::Declare | Tok::Assign => {
                    return Err(self.err(line, "unexpected token in operand"));
                }
                Tok::Str(s) => cur.push(Arg::Str(s.clone())),
                Tok::Num(n) => cur.push(
                    parse_number(n)
                        .ok_or_else(|| self.err(line, format!("bad number syntax: {n:?}")))?,
                ),
                Tok::Var(v) => {
                    if !self.declared(v) {
                        return Err(self.err(line, format!("undefined variable {v:?}")));
                    }
                    let mut fields = Vec::new();
                    while let Some(Tok::Field(f)) = toks.get(i) {
                        fields.push(f.clone());
                        i += 1;
                    }
                    cur.push(Arg::Var(v.clone(), fields));
                }
                Tok::Field(f) => {
                    let mut fields = vec![f.clone()];
                    while let Some(Tok::Field(f)) = toks.get(i) {
                        fields.push(f.clone());
                        i += 1;
                    }
                    cur.push(Arg::Field(fields));
                }
                Tok::Dot => cur.push(Arg::Dot),
                Tok::Ident(id) => match id.as_str() {
                    "true" => cur.push(Arg::Bool(true)),
                    "false" => cur.push(Arg::Bool(false)),
                    "nil" => cur.push(Arg::Nil),
                    _ if (self.funcs)(id) => cur.push(Arg::Func(id.clone())),
                    _ => return Err(self.err(line, format!("function {id:?} not defined"))),
                },
            }
        }
        if !cur.is_empty() {
            cmds.push(self.cmd(cur, spans, cur_first, toks.len()));
        } else if !cmds.is_empty() {
            return Err(self.err(line, "missing command"));
        }
        if let Some(scope) = self
            .scopes
            .last_mut()
            .filter(|_| top && !decl.is_empty() && !assign)
        {
            scope.extend(decl.iter().cloned());
        }
        Ok(Pipe {
            line,
            decl,
            assign,
            cmds,
        })
    }
}

fn parse_number(n: &str) -> Option<Arg> {
    let clean = n.replace('_', "");
    let (neg, digits) = match clean.strip_prefix('-') {
        Some(d) => (true, d.to_string()),
        None => (false, clean.trim_start_matches('+').to_string()),
    };
    let int = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(h, 16).ok()
    } else if digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().all(|c| c.is_ascii_digit())
    {
        i64::from_str_radix(&digits[1..], 8).ok()
    } else {
        digits.parse::<i64>().ok()
    };
    if let Some(i) = int {
        return Some(Arg::Int(if neg { -i } else { i }));
    }
    digits
        .parse::<f64>()
        .ok()
        .map(|f| Arg::Float(if neg { -f } else { f }))
}
