//! The template lexer: text runs and `{{ }}` actions (with `{{-`/`-}}` trimming and
//! comments), each action's tokens with their byte spans for Go-style error positions.

use super::TemplateError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
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

/// One action's tokens plus its line, or a text run.
pub(super) enum Chunk {
    Text(String),
    /// Tokens, their byte spans in the whole text, and the action's line.
    Action(Vec<Tok>, Vec<(usize, usize)>, usize),
}

pub(super) fn lex_err(name: &str, line: usize, msg: impl Into<String>) -> TemplateError {
    TemplateError(format!("template: {name}:{line}: {}", msg.into()))
}

pub(super) fn split_chunks(name: &str, text: &str) -> Result<Vec<Chunk>, TemplateError> {
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
        let base = text.len() - body.len();
        let (toks, consumed, trim_right) = lex_action(name, body, base, action_line)?;
        line += body[..consumed].matches('\n').count();
        if let Some((toks, spans)) = toks {
            chunks.push(Chunk::Action(toks, spans, action_line));
        }
        trim_next = trim_right;
        rest = &body[consumed..];
    }
    Ok(chunks)
}

/// Lexes one action body; returns its tokens (None for a comment), the bytes used
/// including the closing delimiter, and whether it ends with `-}}`.
type Lexed = (Option<(Vec<Tok>, Vec<(usize, usize)>)>, usize, bool);

fn lex_action(name: &str, body: &str, base: usize, line: usize) -> Result<Lexed, TemplateError> {
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
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            if body[i..].trim_start().starts_with("-}}") {
                let j = i + (body[i..].len() - body[i..].trim_start().len());
                return Ok((Some((toks, spans)), j + 3, true));
            }
            i += 1;
            continue;
        }
        if body[i..].starts_with("}}") {
            return Ok((Some((toks, spans)), i + 2, false));
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
        if spans.len() < toks.len() {
            spans.push((base + start, base + i));
        }
    }
    Err(lex_err(name, line, "unclosed action"))
}
