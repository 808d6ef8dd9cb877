//! `vigil silence add|list|expire`: the collector's silences, in Alertmanager v2's
//! shapes (`PostableSilence` in, `GettableSilence` out), with amtool's matcher syntax.

use std::io::Write as _;

use anyhow::{Context as _, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{Client, CollectorArgs, encode_query_value, unwrap_data};
use crate::matcher::{self, Matcher};
use crate::render::{clock, compact_duration, parse_time, table};

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Silence the alerts that match every MATCHER; prints the new silence's id.
    Add(AddArgs),
    /// Active and pending silences (with --expired, expired ones too).
    List {
        /// Include expired silences.
        #[arg(long)]
        expired: bool,
    },
    /// End a silence now.
    Expire {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// amtool's syntax: `alertname=GpuFellOffBus`, `node=~"gpu-0[1-3]"`, `severity!=info`;
    /// a first argument without an operator is the alert's name.
    #[arg(required = true, value_name = "MATCHER")]
    pub matchers: Vec<String>,
    /// How long the silence lasts from now (a Prometheus duration: 30m, 2h, 1d).
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub duration: String,
    /// Why (shown in `vigil silence list` and the alert history).
    #[arg(long, value_name = "TEXT")]
    pub comment: String,
    /// Who; defaults to $USER.
    #[arg(long, value_name = "NAME")]
    pub author: Option<String>,
}

pub async fn run(conn: &CollectorArgs, command: &SilenceCommand) -> anyhow::Result<()> {
    match command {
        SilenceCommand::Add(args) => add(conn, args).await,
        SilenceCommand::List { expired } => list(conn, *expired).await,
        SilenceCommand::Expire { ids } => expire(conn, ids).await,
    }
}

/// Alertmanager v2's `PostableSilence` for `args`, starting at `now`.
pub fn postable(args: &AddArgs, now: DateTime<Utc>) -> anyhow::Result<Value> {
    let matchers = matcher::parse_args(&args.matchers).map_err(anyhow::Error::msg)?;
    let duration_ms = vigil_rules::duration::parse_duration(&args.duration)
        .map_err(|e| anyhow::anyhow!("--duration {:?}: {e}", args.duration))?;
    if duration_ms <= 0 {
        bail!("--duration {:?}: must be longer than 0", args.duration);
    }
    if args.comment.trim().is_empty() {
        bail!("--comment: say why the alerts are silenced");
    }
    let author = match &args.author {
        Some(a) => a.clone(),
        None => std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "vigil".to_owned()),
    };
    let ends = now + chrono::Duration::milliseconds(duration_ms);
    Ok(json!({
        "matchers": matchers.iter().map(Matcher::to_json).collect::<Vec<_>>(),
        "startsAt": now.to_rfc3339_opts(SecondsFormat::Millis, true),
        "endsAt": ends.to_rfc3339_opts(SecondsFormat::Millis, true),
        "createdBy": author,
        "comment": args.comment,
    }))
}

async fn add(conn: &CollectorArgs, args: &AddArgs) -> anyhow::Result<()> {
    let body = postable(args, Utc::now())?;
    let client = Client::new(conn)?;
    let answer = unwrap_data(client.post("/api/v1/silences", &body).await?)?;
    let id = answer
        .get("silenceID")
        .or_else(|| answer.get("id"))
        .and_then(Value::as_str)
        .with_context(|| format!("POST /api/v1/silences: no silenceID in the answer {answer}"))?;
    let mut out = std::io::stdout().lock();
    if conn.json {
        writeln!(out, "{}", json!({ "silenceID": id }))?;
    } else {
        writeln!(out, "{id}")?;
    }
    Ok(())
}

async fn list(conn: &CollectorArgs, expired: bool) -> anyhow::Result<()> {
    let client = Client::new(conn)?;
    let answer = unwrap_data(client.get("/api/v1/silences").await?)?;
    let silences = answer
        .as_array()
        .context("GET /api/v1/silences: the answer is not a list of silences")?;
    let shown: Vec<&Value> = silences
        .iter()
        .filter(|s| expired || state_of(s) != "expired")
        .collect();
    let mut out = std::io::stdout().lock();
    if conn.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&shown)?)?;
    } else {
        out.write_all(silences_table(&shown, Utc::now()).as_bytes())?;
    }
    Ok(())
}

async fn expire(conn: &CollectorArgs, ids: &[String]) -> anyhow::Result<()> {
    let client = Client::new(conn)?;
    let mut out = std::io::stdout().lock();
    for id in ids {
        if id.is_empty() || id.contains(['/', '?', '#']) {
            bail!("{id:?} is not a silence id");
        }
        client
            .delete(&format!("/api/v1/silences/{}", encode_query_value(id)))
            .await
            .with_context(|| format!("expiring silence {id}"))?;
        if !conn.json {
            writeln!(out, "expired {id}")?;
        }
    }
    Ok(())
}

fn state_of(silence: &Value) -> &str {
    silence["status"]["state"].as_str().unwrap_or("-")
}

/// Active first, then pending, then expired; within each, the soonest end first.
pub fn silences_table(silences: &[&Value], now: DateTime<Utc>) -> String {
    if silences.is_empty() {
        return "no silences\n".to_owned();
    }
    let mut sorted = silences.to_vec();
    let rank = |s: &Value| match state_of(s) {
        "active" => 0,
        "pending" => 1,
        _ => 2,
    };
    sorted.sort_by_key(|s| (rank(s), parse_time(&s["endsAt"])));
    let rows: Vec<Vec<String>> = sorted
        .into_iter()
        .map(|s| {
            let matchers = s["matchers"]
                .as_array()
                .map(|ms| {
                    ms.iter()
                        .filter_map(Matcher::from_json)
                        .map(|m| m.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let ends = match parse_time(&s["endsAt"]) {
                Some(t) if t > now => {
                    format!(
                        "{} (in {})",
                        clock(t),
                        compact_duration((t - now).num_seconds())
                    )
                }
                Some(t) => clock(t),
                None => "-".to_owned(),
            };
            vec![
                s["id"].as_str().unwrap_or("-").to_owned(),
                state_of(s).to_owned(),
                matchers,
                ends,
                s["createdBy"].as_str().unwrap_or("-").to_owned(),
                s["comment"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    table(
        &["ID", "STATE", "MATCHERS", "ENDS", "CREATED BY", "COMMENT"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_args(matchers: &[&str], duration: &str, comment: &str) -> AddArgs {
        AddArgs {
            matchers: matchers.iter().map(|s| (*s).to_owned()).collect(),
            duration: duration.into(),
            comment: comment.into(),
            author: Some("ops".into()),
        }
    }

    #[test]
    fn postable_silence_has_alertmanagers_shape() {
        let now = parse_time(&json!("2026-11-27T12:00:00Z")).unwrap();
        let body = postable(
            &add_args(
                &["alertname=GpuFellOffBus", "node=~\"gpu-0[1-3]\""],
                "2h",
                "reseating",
            ),
            now,
        )
        .unwrap();
        assert_eq!(
            body,
            json!({
                "matchers": [
                    {"name":"alertname","value":"GpuFellOffBus","isRegex":false,"isEqual":true},
                    {"name":"node","value":"gpu-0[1-3]","isRegex":true,"isEqual":true},
                ],
                "startsAt": "2026-11-27T12:00:00.000Z",
                "endsAt": "2026-11-27T14:00:00.000Z",
                "createdBy": "ops",
                "comment": "reseating",
            })
        );
    }

    #[test]
    fn bad_input_is_named() {
        let now = Utc::now();
        let e = postable(&add_args(&["node=x"], "soon", "c"), now).unwrap_err();
        assert!(e.to_string().starts_with("--duration \"soon\""), "{e}");
        let e = postable(&add_args(&["node=x"], "1h", "  "), now).unwrap_err();
        assert!(e.to_string().starts_with("--comment"), "{e}");
        let e = postable(&add_args(&["node=x", "gpu"], "1h", "c"), now).unwrap_err();
        assert!(e.to_string().contains("no operator"), "{e}");
    }

    #[test]
    fn list_shows_matchers_and_state() {
        let now = parse_time(&json!("2026-11-27T12:00:00Z")).unwrap();
        let expired = json!({"id":"old","status":{"state":"expired"},
            "matchers":[{"name":"node","value":"a","isRegex":false,"isEqual":true}],
            "startsAt":"2026-11-27T09:00:00Z","endsAt":"2026-11-27T10:00:00Z",
            "createdBy":"ops","comment":"done","updatedAt":"2026-11-27T10:00:00Z"});
        let active = json!({"id":"4f1c","status":{"state":"active"},
            "matchers":[{"name":"node","value":"gpu-0[1-3]","isRegex":true,"isEqual":true},
                        {"name":"severity","value":"info","isRegex":false,"isEqual":false}],
            "startsAt":"2026-11-27T11:00:00Z","endsAt":"2026-11-27T13:30:00Z",
            "createdBy":"ops","comment":"reseating GPUs","updatedAt":"2026-11-27T11:00:00Z"});
        let text = silences_table(&[&expired, &active], now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("4f1c"), "{text}");
        assert!(
            lines[1].contains("node=~\"gpu-0[1-3]\" severity!=\"info\""),
            "{text}"
        );
        assert!(
            lines[1].contains("2026-11-27 13:30:00 (in 1h30m)"),
            "{text}"
        );
        assert!(lines[1].ends_with("reseating GPUs"), "{text}");
        assert!(lines[2].starts_with("old "), "{text}");
    }
}
