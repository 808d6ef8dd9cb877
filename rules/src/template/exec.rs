//! Executes a parsed template over Prometheus's alert data with text/template's
//! rules: `missingkey=zero` (an absent label is ""), Go's truthiness, pipelines
//! passing the previous result as the last argument, and Go's printing of values.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::gofmt::float_v;
use super::parse::{Arg, Cmd, Item, Pipe};
use super::{Env, QuerySample, TemplateError};

/// A template value: the Go types Prometheus's template data and functions produce.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// `map[string]string`, as `.Labels` is.
    Map(Rc<BTreeMap<String, String>>),
    /// A query result (`queryResult`).
    Samples(Rc<Vec<QuerySample>>),
    Sample(Rc<QuerySample>),
    /// The template data: named fields.
    Struct(Rc<Vec<(String, Val)>>),
}

impl Val {
    /// What `{{ x }}` prints (fmt.Sprint).
    pub fn to_go_string(&self) -> String {
        match self {
            Val::Nil => "<nil>".into(),
            Val::Bool(b) => b.to_string(),
            Val::Int(i) => i.to_string(),
            Val::Float(f) => float_v(*f),
            Val::Str(s) => s.clone(),
            Val::Map(m) => {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("map[{}]", parts.join(" "))
            }
            Val::Samples(s) => {
                let parts: Vec<String> = s.iter().map(sample_string).collect();
                format!("[{}]", parts.join(" "))
            }
            Val::Sample(s) => format!("&{}", sample_string(s)),
            Val::Struct(fields) => {
                let parts: Vec<String> = fields.iter().map(|(_, v)| v.to_go_string()).collect();
                format!("{{{}}}", parts.join(" "))
            }
        }
    }

    /// Go's template truthiness: zero values and empty collections are false.
    pub fn truth(&self) -> bool {
        match self {
            Val::Nil => false,
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::Float(f) => *f != 0.0,
            Val::Str(s) => !s.is_empty(),
            Val::Map(m) => !m.is_empty(),
            Val::Samples(s) => !s.is_empty(),
            Val::Sample(_) | Val::Struct(_) => true,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Nil => "nil",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Float(_) => "float64",
            Val::Str(_) => "string",
            Val::Map(_) => "map[string]string",
            Val::Samples(_) => "template.queryResult",
            Val::Sample(_) => "*template.sample",
            Val::Struct(_) => "struct",
        }
    }
}

fn sample_string(s: &QuerySample) -> String {
    let parts: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{map[{}] {}}}", parts.join(" "), float_v(s.value))
}

pub(crate) struct Exec<'a> {
    pub name: &'a str,
    pub env: &'a Env<'a>,
    pub vars: Vec<(String, Val)>,
    pub out: String,
}

impl Exec<'_> {
    fn err(&self, line: usize, msg: impl std::fmt::Display) -> TemplateError {
        TemplateError(format!(
            "template: {}:{line}: executing {:?}: {msg}",
            self.name, self.name
        ))
    }

    pub fn run(&mut self, items: &[Item], dot: &Val) -> Result<(), TemplateError> {
        for item in items {
            match item {
                Item::Text(t) => self.out.push_str(t),
                Item::Action(p) => {
                    let v = self.pipe(p, dot)?;
                    if p.decl.is_empty() {
                        self.out.push_str(&v.to_go_string());
                    }
                }
                Item::If { pipe, then, els } | Item::With { pipe, then, els } => {
                    let mark = self.vars.len();
                    let v = self.pipe(pipe, dot)?;
                    let is_with = matches!(item, Item::With { .. });
                    if v.truth() {
                        let d = if is_with { v } else { dot.clone() };
                        self.run(then, &d)?;
                    } else {
                        self.run(els, dot)?;
                    }
                    self.vars.truncate(mark);
                }
                Item::Range { pipe, body, els } => {
                    let mark = self.vars.len();
                    let v = self.eval_cmds(pipe, dot)?;
                    let elems: Vec<(Val, Val)> = match &v {
                        Val::Map(m) => m
                            .iter()
                            .map(|(k, v)| (Val::Str(k.clone()), Val::Str(v.clone())))
                            .collect(),
                        Val::Samples(s) => s
                            .iter()
                            .enumerate()
                            .map(|(i, x)| (Val::Int(i as i64), Val::Sample(Rc::new(x.clone()))))
                            .collect(),
                        Val::Int(n) => (0..*n).map(|i| (Val::Int(i), Val::Int(i))).collect(),
                        Val::Nil => Vec::new(),
                        other => {
                            return Err(self.err(
                                pipe.line,
                                format!("range can't iterate over {}", other.to_go_string()),
                            ));
                        }
                    };
                    if elems.is_empty() {
                        self.run(els, dot)?;
                    }
                    for (k, e) in elems {
                        self.vars.truncate(mark);
                        match pipe.decl.as_slice() {
                            [v] => self.vars.push((v.clone(), e.clone())),
                            [kn, vn] => {
                                self.vars.push((kn.clone(), k));
                                self.vars.push((vn.clone(), e.clone()));
                            }
                            _ => {}
                        }
                        self.run(body, &e)?;
                    }
                    self.vars.truncate(mark);
                }
            }
        }
        Ok(())
    }

    /// Runs a pipeline and applies its declaration or assignment.
    fn pipe(&mut self, p: &Pipe, dot: &Val) -> Result<Val, TemplateError> {
        let v = self.eval_cmds(p, dot)?;
        for name in &p.decl {
            if p.assign {
                if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                    slot.1 = v.clone();
                }
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn eval_cmds(&mut self, p: &Pipe, dot: &Val) -> Result<Val, TemplateError> {
        let mut prev: Option<Val> = None;
        for cmd in &p.cmds {
            prev = Some(self.command(cmd, dot, prev)?);
        }
        Ok(prev.unwrap_or(Val::Nil))
    }

    /// Go's located error: `template: NAME:LINE:COL: executing "NAME" at <CMD>: MSG`.
    fn err_at(&self, cmd: &Cmd, msg: impl std::fmt::Display) -> TemplateError {
        TemplateError(format!(
            "template: {}:{}:{}: executing {:?} at <{}>: {msg}",
            self.name, cmd.line, cmd.col, self.name, cmd.text
        ))
    }

    fn command(&mut self, c: &Cmd, dot: &Val, prev: Option<Val>) -> Result<Val, TemplateError> {
        let (cmd, line) = (c.args.as_slice(), c.line);
        let Some(first) = cmd.first() else {
            return Ok(Val::Nil);
        };
        if let Arg::Func(f) = first {
            let mut args = Vec::with_capacity(cmd.len());
            // `and`/`or` short-circuit in Go; evaluating eagerly only matters for errors.
            for a in &cmd[1..] {
                args.push(self.arg(a, dot, line)?);
            }
            if let Some(p) = prev {
                args.push(p);
            }
            return super::funcs::call(f, args, self.env)
                .map_err(|e| self.err_at(c, format!("error calling {f}: {e}")));
        }
        if cmd.len() > 1 || prev.is_some() {
            return Err(self.err_at(
                c,
                format!("can't give argument to non-function {}", arg_text(first)),
            ));
        }
        self.arg(first, dot, line)
    }

    fn arg(&mut self, a: &Arg, dot: &Val, line: usize) -> Result<Val, TemplateError> {
        match a {
            Arg::Dot => Ok(dot.clone()),
            Arg::Field(fs) => self.fields(dot.clone(), fs, line),
            Arg::Var(v, fs) => {
                let base = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == v)
                    .map(|(_, val)| val.clone())
                    .ok_or_else(|| self.err(line, format!("undefined variable: {v}")))?;
                self.fields(base, fs, line)
            }
            Arg::Func(f) => super::funcs::call(f, Vec::new(), self.env)
                .map_err(|e| self.err(line, format!("error calling {f}: {e}"))),
            Arg::Str(s) => Ok(Val::Str(s.clone())),
            Arg::Int(i) => Ok(Val::Int(*i)),
            Arg::Float(f) => Ok(Val::Float(*f)),
            Arg::Bool(b) => Ok(Val::Bool(*b)),
            Arg::Nil => Err(self.err(line, "nil is not a command")),
            Arg::Sub(p, fs) => {
                let v = self.eval_cmds(p, dot)?;
                self.fields(v, fs, line)
            }
        }
    }

    fn fields(&self, mut v: Val, fs: &[String], line: usize) -> Result<Val, TemplateError> {
        for f in fs {
            v = match &v {
                Val::Map(m) => Val::Str(m.get(f).cloned().unwrap_or_default()),
                Val::Struct(fields) => fields
                    .iter()
                    .find(|(n, _)| n == f)
                    .map(|(_, x)| x.clone())
                    .ok_or_else(|| {
                        self.err(
                            line,
                            format!("can't evaluate field {f} in type {}", v.type_name()),
                        )
                    })?,
                Val::Sample(s) => match f.as_str() {
                    "Labels" => Val::Map(Rc::new(s.labels.clone())),
                    "Value" => Val::Float(s.value),
                    _ => {
                        return Err(self.err(
                            line,
                            format!("can't evaluate field {f} in type *template.sample"),
                        ));
                    }
                },
                Val::Nil => {
                    return Err(
                        self.err(line, format!("nil pointer evaluating interface {{}}.{f}"))
                    );
                }
                other => {
                    return Err(self.err(
                        line,
                        format!("can't evaluate field {f} in type {}", other.type_name()),
                    ));
                }
            };
        }
        Ok(v)
    }
}

fn arg_text(a: &Arg) -> String {
    match a {
        Arg::Dot => ".".into(),
        Arg::Field(fs) => format!(".{}", fs.join(".")),
        Arg::Var(v, fs) if fs.is_empty() => v.clone(),
        Arg::Var(v, fs) => format!("{v}.{}", fs.join(".")),
        Arg::Str(s) => super::gofmt::quote(s),
        Arg::Int(i) => i.to_string(),
        Arg::Float(f) => float_v(*f),
        Arg::Bool(b) => b.to_string(),
        Arg::Nil => "nil".into(),
        Arg::Func(f) => f.clone(),
        Arg::Sub(..) => "(...)".into(),
    }
}
