//! Lexer and parser for the Go text/template subset Prometheus annotations use:
//! text, `{{ pipeline }}` actions with `{{-`/`-}}` trimming and comments, variable
//! declaration and assignment, `if`/`else if`/`else`, `with`/`else with`, `range`
//! (with `$k, $v :=`), parenthesised pipelines, and field chains on `.`, `$var` and
//! `(...)`. Like Go, it reports undefined variables and functions when parsing.

use super::TemplateError;

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
    pub cmds: Vec<Vec<Arg>>,
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

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Pipe,
    Open,
    Close,
    Comma,
    Declare,
    Assign,
    Str(String),
    Num(String),
    Var(String),
    Field(String),
    Dot,
    Ident(String),
}

/// The keyword (`end` or `else`) that closed a list, and its line.
type EndMarker = (String, usize);

/// One action's tokens plus its line, or a text run.
enum Chunk {
    Text(String),
    Action(Vec<Tok>, usize),
}

pub(crate) struct Parser<'a> {
    name: &'a str,
    funcs: &'a dyn Fn(&str) -> bool,
    chunks: Vec<Chunk>,
    pos: usize,
    scopes: Vec<Vec<String>>,
}

fn lex_err(name: &str, line: usize, msg: impl Into<String>) -> TemplateError {
    TemplateError(format!("template: {name}:{line}: {}", msg.into()))
}

fn split_chunks(name: &str, text: &str) -> Result<Vec<Chunk>, TemplateError> {
    let mut chunks = Vec::new();
    let mut rest = text;
    let mut line = 1;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            let t = if trim_next { rest.trim_start() } else { rest };
            chunks.push(Chunk::Text(t.to_string()));
            break;
        };
        let mut t = &rest[..open];
        if trim_next {
            t = t.trim_start();
        }
        let mut body = &rest[open + 2..];
        let trim_left = body.starts_with("- ")
            || body.starts_with("-\t")
            || body.starts_with("-\n")
            || body.starts_with("-\r");
        if trim_left {
            t = t.trim_end();
            body = &body[1..];
        }
        if !t.is_empty() {
            chunks.push(Chunk::Text(t.to_string()));
        }
        line += rest[..open].matches('\n').count();
        let action_line = line;
        let (toks, consumed, trim_right) = lex_action(name, body, action_line)?;
        line += body[..consumed].matches('\n').count();
        if let Some(toks) = toks {
            chunks.push(Chunk::Action(toks, action_line));
        }
        trim_next = trim_right;
        rest = &body[consumed..];
    }
    Ok(chunks)
}

/// Lexes one action body; returns its tokens (None for a comment), the bytes used
/// including the closing delimiter, and whether it ends with `-}}`.
fn lex_action(
    name: &str,
    body: &str,
    line: usize,
) -> Result<(Option<Vec<Tok>>, usize, bool), TemplateError> {
    let b = body.as_bytes();
    let trimmed = body.trim_start();
    if trimmed.starts_with("/*") {
        let start = body.len() - trimmed.len();
        let end = body[start..]
            .find("*/")
            .ok_or_else(|| lex_err(name, line, "unclosed comment"))?
            + start
            + 2;
        let after = &body[end..];
        let after_t = after.trim_start();
        if let Some(r) = after_t.strip_prefix("-}}") {
            return Ok((None, body.len() - r.len(), true));
        }
        if let Some(r) = after.strip_prefix("}}") {
            return Ok((None, body.len() - r.len(), false));
        }
        return Err(lex_err(name, line, "comment ends before closing delimiter"));
    }
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            if body[i..].trim_start().starts_with("-}}") {
                let j = i + (body[i..].len() - body[i..].trim_start().len());
                return Ok((Some(toks), j + 3, true));
            }
            i += 1;
            continue;
        }
        if body[i..].starts_with("}}") {
            return Ok((Some(toks), i + 2, false));
        }
        let start = i;
        let ident_end = |mut j: usize| {
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
                j += 1;
            }
            j
        };
        match c {
            b'|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            b'(' => {
                toks.push(Tok::Open);
                i += 1;
            }
            b')' => {
                toks.push(Tok::Close);
                i += 1;
            }
            b',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            b':' if b.get(i + 1) == Some(&b'=') => {
                toks.push(Tok::Declare);
                i += 2;
            }
            b'=' => {
                toks.push(Tok::Assign);
                i += 1;
            }
            b'"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let ch = body[i..]
                        .chars()
                        .next()
                        .ok_or_else(|| lex_err(name, line, "unterminated quoted string"))?;
                    i += ch.len_utf8();
                    match ch {
                        '"' => break,
                        '\n' => return Err(lex_err(name, line, "unterminated quoted string")),
                        '\\' => {
                            let e = body[i..]
                                .chars()
                                .next()
                                .ok_or_else(|| lex_err(name, line, "unterminated quoted string"))?;
                            i += e.len_utf8();
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '\\' => '\\',
                                '"' => '"',
                                '\'' => '\'',
                                'a' => '\x07',
                                '0' => '\0',
                                _ => {
                                    return Err(lex_err(
                                        name,
                                        line,
                                        format!("invalid syntax: \\{e}"),
                                    ));
                                }
                            });
                        }
                        other => s.push(other),
                    }
                }
                toks.push(Tok::Str(s));
            }
            b'`' => {
                let end = body[i + 1..]
                    .find('`')
                    .ok_or_else(|| lex_err(name, line, "unterminated raw quoted string"))?;
                toks.push(Tok::Str(body[i + 1..i + 1 + end].to_string()));
                i += end + 2;
            }
            b'\'' => {
                let ch = body[i + 1..]
                    .chars()
                    .next()
                    .ok_or_else(|| lex_err(name, line, "unterminated character constant"))?;
                if body[i + 1 + ch.len_utf8()..].starts_with('\'') {
                    toks.push(Tok::Num((ch as u32).to_string()));
                    i += 2 + ch.len_utf8();
                } else {
                    return Err(lex_err(name, line, "unterminated character constant"));
                }
            }
            b'$' => {
                let j = ident_end(i + 1);
                toks.push(Tok::Var(body[i..j].to_string()));
                i = j;
            }
            b'.' if b
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == b'_') =>
            {
                let j = ident_end(i + 1);
                toks.push(Tok::Field(body[i + 1..j].to_string()));
                i = j;
            }
            b'.' if !b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                toks.push(Tok::Dot);
                i += 1;
            }
            b'0'..=b'9' | b'+' | b'-' | b'.' => {
                let mut j = i + 1;
                while j < b.len()
                    && (b[j].is_ascii_alphanumeric()
                        || b[j] == b'.'
                        || b[j] == b'_'
                        || ((b[j] == b'+' || b[j] == b'-')
                            && matches!(b[j - 1], b'e' | b'E' | b'p' | b'P')))
                {
                    j += 1;
                }
                toks.push(Tok::Num(body[i..j].to_string()));
                i = j;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let j = ident_end(i);
                toks.push(Tok::Ident(body[i..j].to_string()));
                i = j;
            }
            _ => {
                let ch = body[start..].chars().next().unwrap_or('?');
                return Err(lex_err(name, line, format!("unexpected {ch:?} in command")));
            }
        }
    }
    Err(lex_err(name, line, "unclosed action"))
}

impl<'a> Parser<'a> {
    pub fn parse(
        name: &'a str,
        text: &str,
        funcs: &'a dyn Fn(&str) -> bool,
    ) -> Result<Vec<Item>, TemplateError> {
        let chunks = split_chunks(name, text)?;
        let mut p = Parser {
            name,
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
            let (toks, line) = match &self.chunks[idx] {
                Chunk::Text(t) => {
                    items.push(Item::Text(t.clone()));
                    continue;
                }
                Chunk::Action(toks, line) => (toks.clone(), *line),
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
                    items.push(self.control(&k, &toks[1..], line)?);
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
                    let pipe = self.pipeline(&toks, line, true)?;
                    items.push(Item::Action(pipe));
                }
            }
        }
        Ok((items, None))
    }

    fn control(&mut self, kw: &str, toks: &[Tok], line: usize) -> Result<Item, TemplateError> {
        self.scopes.push(Vec::new());
        let pipe = self.pipeline(toks, line, true)?;
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
                let Chunk::Action(etoks, _) = &self.chunks[self.pos] else {
                    return Err(self.err(eline, "unexpected else"));
                };
                let etoks = etoks.clone();
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
                        els.push(self.control(&k, &etoks[2..], eline)?);
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

    fn pipeline(&mut self, toks: &[Tok], line: usize, top: bool) -> Result<Pipe, TemplateError> {
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
        while i < toks.len() {
            let t = &toks[i];
            i += 1;
            match t {
                Tok::Pipe => {
                    if cur.is_empty() {
                        return Err(self.err(line, "missing command"));
                    }
                    cmds.push(std::mem::take(&mut cur));
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
                    let inner = self.pipeline(&toks[start..i - 1], line, false)?;
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
            cmds.push(cur);
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
