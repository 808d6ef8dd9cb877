//! `vigil actions`: the collector's recovery audit (every decision of its remediation
//! policy and, where a script ran, its outcome), approvals, and the fleet-wide kill
//! switch. The JSON is vigil-proto's ([`vigil_proto::actions`]); the dashboard's actions
//! view shares the wording here ([`result_summary`], [`kill_switch_line`]).

use std::io::Write as _;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use vigil_proto::actions::{
    Action, ActionList, ActionState, ApproveRequest, KillSwitch, KillSwitchRequest, logs_query,
};

use crate::client::{Client, CollectorArgs, encode_query_value, unwrap_data};
use crate::render::{clock, compact_duration, one_line, table};

/// Characters of an id the table shows; enough to be unique in any real audit, and
/// accepted back as a prefix.
pub const SHORT_ID: usize = 8;
/// How many of the newest actions a prefix is resolved against.
const RESOLVE_LIMIT: usize = 1000;
/// The longest RESULT cell in the table.
const RESULT_CHARS: usize = 60;

#[derive(Debug, Subcommand)]
pub enum ActionsCommand {
    /// Every field of one action (its id or a unique prefix of it), and the logs query
    /// that finds its output.
    Show {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Let an action that awaits approval run.
    Approve(DecideArgs),
    /// Refuse an action that awaits approval.
    Reject(DecideArgs),
    /// Stop every recovery action on the fleet (on), or allow them again (off).
    KillSwitch(KillSwitchArgs),
}

/// `vigil actions` with no subcommand: the newest actions.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this node's actions.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Only actions in this state.
    #[arg(long, value_name = "STATE", value_parser = state_names())]
    pub state: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub limit: usize,
}

/// `--state`'s values: the API's state names.
fn state_names() -> PossibleValuesParser {
    PossibleValuesParser::new(ActionState::ALL.map(ActionState::as_str))
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The action's id, or a unique prefix of it (the table's ID column).
    #[arg(value_name = "ID")]
    pub id: String,
    /// Who decides; defaults to $USER.
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct KillSwitchArgs {
    #[arg(value_name = "on|off")]
    pub switch: Switch,
    /// Why (shown to everyone who lists the actions while it is engaged).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Who; defaults to $USER.
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
}

/// $USER, or `vigil` when it is unset: who approves, rejects or flips the switch.
pub fn operator_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "vigil".to_owned())
}

pub async fn run(
    conn: &CollectorArgs,
    command: Option<&ActionsCommand>,
    list_args: &ListArgs,
) -> anyhow::Result<()> {
    let client = Client::new(conn)?;
    match command {
        None => list(&client, conn, list_args).await,
        Some(ActionsCommand::Show { id }) => show(&client, conn, id).await,
        Some(ActionsCommand::Approve(args)) => decide(&client, conn, args, Verdict::Approve).await,
        Some(ActionsCommand::Reject(args)) => decide(&client, conn, args, Verdict::Reject).await,
        Some(ActionsCommand::KillSwitch(args)) => kill_switch(&client, conn, args).await,
    }
}

/// `/api/v1/actions?limit=N[&node=..][&state=..]`.
pub fn list_path(node: Option<&str>, state: Option<&str>, limit: usize) -> String {
    let mut path = format!("/api/v1/actions?limit={limit}");
    if let Some(node) = node {
        path.push_str(&format!("&node={}", encode_query_value(node)));
    }
    if let Some(state) = state {
        path.push_str(&format!("&state={}", encode_query_value(state)));
    }
    path
}

/// GET the list: the raw `data` (for `--json`) and its typed form. A collector without
/// the endpoint (an empty 404 from its router) is named as such.
async fn fetch_list(client: &Client, path: &str) -> anyhow::Result<(Value, ActionList)> {
    let answer = match client.get(path).await {
        Ok(answer) => answer,
        Err(e) if is_missing_endpoint(&format!("{e:#}")) => {
            bail!(
                "the collector has no recovery actions API (GET {path}: 404); \
                 it is an older version"
            )
        }
        Err(e) => return Err(e),
    };
    let data = unwrap_data(answer)?;
    let list: ActionList = serde_json::from_value(data.clone())
        .with_context(|| format!("GET {path}: the answer is not a list of actions"))?;
    Ok((data, list))
}

/// Whether a request failed with 404 because the collector has no such endpoint at
/// all (its router's empty answer), as opposed to a handler's 404 for an unknown id.
pub fn is_missing_endpoint(error: &str) -> bool {
    error.contains(": 404 Not Found: (empty body)")
}

async fn list(client: &Client, conn: &CollectorArgs, args: &ListArgs) -> anyhow::Result<()> {
    let path = list_path(args.node.as_deref(), args.state.as_deref(), args.limit);
    let (data, list) = fetch_list(client, &path).await?;
    let mut out = std::io::stdout().lock();
    if conn.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&data)?)?;
    } else {
        out.write_all(actions_table(&list, Utc::now()).as_bytes())?;
    }
    Ok(())
}

/// The kill switch's line (when engaged), then one row per action in the API's order
/// (newest first).
pub fn actions_table(list: &ActionList, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    if let Some(line) = kill_switch_line(&list.kill_switch, now) {
        out.push_str(&line);
        out.push('\n');
    }
    if list.actions.is_empty() {
        out.push_str("no recovery actions\n");
        return out;
    }
    let rows: Vec<Vec<String>> = list
        .actions
        .iter()
        .map(|a| {
            vec![
                short_id(&a.id).to_owned(),
                parse_rfc3339(&a.created_at).map_or_else(
                    || "-".to_owned(),
                    |t| compact_duration((now - t).num_seconds()),
                ),
                a.node.clone(),
                a.script.clone(),
                a.alertname.clone(),
                a.decision.as_str().to_owned(),
                a.state.as_str().to_owned(),
                a.attempt.to_string(),
                truncate(&result_summary(a), RESULT_CHARS),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ID", "AGE", "NODE", "SCRIPT", "ALERT", "DECISION", "STATE", "ATTEMPT", "RESULT",
        ],
        &rows,
    ));
    out
}

/// `KILL SWITCH ENGAGED by alice since 2026-11-27 11:40:00 (20m0s ago): reason`, or
/// nothing while it is released.
pub fn kill_switch_line(ks: &KillSwitch, now: DateTime<Utc>) -> Option<String> {
    if !ks.engaged {
        return None;
    }
    let mut line = "KILL SWITCH ENGAGED".to_owned();
    if !ks.by.is_empty() {
        line.push_str(&format!(" by {}", ks.by));
    }
    if let Some(t) = ks.since.as_deref().and_then(parse_rfc3339) {
        line.push_str(&format!(
            " since {} ({} ago)",
            clock(t),
            compact_duration((now - t).num_seconds())
        ));
    }
    if !ks.reason.is_empty() {
        line.push_str(&format!(": {}", one_line(&ks.reason)));
    }
    Some(line)
}

/// What came of an action, in a few words: `exit 0`, `exit 3: disk full`, `signal 9`,
/// `timed out, signal 9`; for one that ran nothing, why.
pub fn result_summary(a: &Action) -> String {
    let mut parts = Vec::new();
    if a.timed_out {
        parts.push("timed out".to_owned());
    }
    if let Some(signal) = a.signal {
        parts.push(format!("signal {signal}"));
    } else if let Some(code) = a.exit_code {
        parts.push(format!("exit {code}"));
    }
    let head = parts.join(", ");
    let message = one_line(&a.message);
    match (head.is_empty(), message.is_empty()) {
        (false, false) => format!("{head}: {message}"),
        (false, true) => head,
        (true, false) => message,
        // Nothing ran: the policy's reason says why.
        (true, true) if !a.state.is_in_flight() && a.state != ActionState::AwaitingApproval => {
            one_line(&a.reason)
        }
        (true, true) => String::new(),
    }
}

pub fn short_id(id: &str) -> &str {
    id.char_indices()
        .nth(SHORT_ID)
        .map_or(id, |(i, _)| &id[..i])
}

/// An RFC 3339 time of the actions API.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The action whose id is `id` alone, else every one whose id starts with it.
fn candidates<'a>(actions: &'a [Action], id: &str) -> Vec<&'a Action> {
    match actions.iter().find(|a| a.id == id) {
        Some(exact) => vec![exact],
        None => actions.iter().filter(|a| a.id.starts_with(id)).collect(),
    }
}

/// The action whose id is `id`, or the only one whose id starts with it.
pub fn resolve<'a>(actions: &'a [Action], id: &str) -> anyhow::Result<&'a Action> {
    if id.is_empty() {
        bail!("an empty action id");
    }
    let matches = candidates(actions, id);
    match matches[..] {
        [only] => Ok(only),
        [] => bail!(
            "no action has the id {id:?} or an id that starts with it \
             (among the newest {RESOLVE_LIMIT})"
        ),
        _ => {
            let names: Vec<String> = matches
                .iter()
                .map(|a| format!("{} ({} on {})", a.id, a.script, a.node))
                .collect();
            bail!(
                "the id prefix {id:?} matches {} actions: {}; give more of the id",
                matches.len(),
                names.join(", ")
            )
        }
    }
}

async fn show(client: &Client, conn: &CollectorArgs, id: &str) -> anyhow::Result<()> {
    let path = list_path(None, None, RESOLVE_LIMIT);
    let (data, list) = fetch_list(client, &path).await?;
    let action = resolve(&list.actions, id)?;
    let mut out = std::io::stdout().lock();
    if conn.json {
        // The collector's own JSON for it, with any field this version does not know.
        let raw = data["actions"]
            .as_array()
            .and_then(|all| all.iter().find(|a| a["id"] == action.id.as_str()))
            .cloned()
            .unwrap_or_else(|| serde_json::to_value(action).unwrap_or_default());
        writeln!(out, "{}", serde_json::to_string_pretty(&raw)?)?;
    } else {
        out.write_all(show_text(action, Utc::now()).as_bytes())?;
    }
    Ok(())
}

/// One `name  value` line per field; absent ones left out.
pub fn show_text(a: &Action, now: DateTime<Utc>) -> String {
    let at = |s: &str| match parse_rfc3339(s) {
        Some(t) => format!(
            "{} ({} ago)",
            clock(t),
            compact_duration((now - t).num_seconds())
        ),
        None => s.to_owned(),
    };
    let pairs = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("id", a.id.clone()),
        ("node", a.node.clone()),
        ("script", a.script.clone()),
        ("alert", a.alertname.clone()),
        ("labels", pairs(&a.labels)),
        ("args", pairs(&a.args)),
        ("decision", a.decision.as_str().to_owned()),
        ("reason", one_line(&a.reason)),
        ("state", a.state.as_str().to_owned()),
        ("attempt", a.attempt.to_string()),
        ("created", at(&a.created_at)),
        ("updated", at(&a.updated_at)),
    ];
    if let Some(by) = &a.approved_by {
        rows.push(("approved by", by.clone()));
    }
    if let Some(t) = &a.started_at {
        rows.push(("started", at(t)));
    }
    if let Some(t) = &a.finished_at {
        let took = a
            .started_at
            .as_deref()
            .and_then(parse_rfc3339)
            .zip(parse_rfc3339(t))
            .map(|(s, f)| format!(", took {}", compact_duration((f - s).num_seconds())))
            .unwrap_or_default();
        rows.push(("finished", format!("{}{took}", at(t))));
    }
    if a.exit_code.is_some() || a.signal.is_some() || a.timed_out {
        let mut result = Vec::new();
        if let Some(code) = a.exit_code {
            result.push(format!("exit code {code}"));
        }
        if let Some(signal) = a.signal {
            result.push(format!("killed by signal {signal}"));
        }
        if a.timed_out {
            result.push("timed out".to_owned());
        }
        rows.push(("result", result.join(", ")));
    }
    if !a.message.is_empty() {
        rows.push(("message", one_line(&a.message)));
    }
    rows.push((
        "logs",
        format!("vigil logs search '{}'", action_logs_query(a)),
    ));
    let mut out = String::new();
    for (name, value) in rows {
        out.push_str(format!("{name:<12} {value}").trim_end());
        out.push('\n');
    }
    out
}

/// The logs query that finds an action's output: the collector's, else the standard one.
pub fn action_logs_query(a: &Action) -> String {
    if a.logs_query.is_empty() {
        logs_query(&a.id)
    } else {
        a.logs_query.clone()
    }
}

#[derive(Debug, Clone, Copy)]
enum Verdict {
    Approve,
    Reject,
}

/// `/api/v1/actions/{id}/approve` or `/reject`.
pub fn decide_path(id: &str, approve: bool) -> String {
    let verb = if approve { "approve" } else { "reject" };
    format!("/api/v1/actions/{}/{verb}", encode_query_value(id))
}

async fn decide(
    client: &Client,
    conn: &CollectorArgs,
    args: &DecideArgs,
    verdict: Verdict,
) -> anyhow::Result<()> {
    let (verb, done) = match verdict {
        Verdict::Approve => ("approving", "approved"),
        Verdict::Reject => ("rejecting", "rejected"),
    };
    // A prefix is resolved against the list; an id the list does not hold (older than
    // its newest entries) goes to the collector as it is, which knows or 404s.
    let (_, list) = fetch_list(client, &list_path(None, None, RESOLVE_LIMIT)).await?;
    let id = if args.id.is_empty() || !candidates(&list.actions, &args.id).is_empty() {
        resolve(&list.actions, &args.id)?.id.clone()
    } else {
        args.id.clone()
    };
    let body = serde_json::to_value(ApproveRequest {
        by: args.by.clone().unwrap_or_else(operator_name),
    })?;
    let path = decide_path(&id, matches!(verdict, Verdict::Approve));
    let answer = client
        .post(&path, &body)
        .await
        .and_then(unwrap_data)
        .with_context(|| format!("{verb} action {id}"))?;
    let mut out = std::io::stdout().lock();
    if conn.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
        return Ok(());
    }
    match serde_json::from_value::<Action>(answer) {
        Ok(a) => writeln!(
            out,
            "{done} {} ({} on {} for {}): now {}",
            short_id(&a.id),
            a.script,
            a.node,
            a.alertname,
            a.state.as_str()
        )?,
        Err(_) => writeln!(out, "{done} {}", short_id(&id))?,
    }
    Ok(())
}

async fn kill_switch(
    client: &Client,
    conn: &CollectorArgs,
    args: &KillSwitchArgs,
) -> anyhow::Result<()> {
    let engaged = args.switch == Switch::On;
    let body = serde_json::to_value(KillSwitchRequest {
        engaged,
        by: args.by.clone().unwrap_or_else(operator_name),
        reason: args.reason.clone().unwrap_or_default(),
    })?;
    let verb = if engaged { "engaging" } else { "releasing" };
    let answer = client
        .post("/api/v1/actions/kill-switch", &body)
        .await
        .and_then(unwrap_data)
        .with_context(|| format!("{verb} the kill switch"))?;
    let mut out = std::io::stdout().lock();
    if conn.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
        return Ok(());
    }
    let ks: KillSwitch = serde_json::from_value(answer).unwrap_or(KillSwitch {
        engaged,
        by: body["by"].as_str().unwrap_or("").to_owned(),
        reason: body["reason"].as_str().unwrap_or("").to_owned(),
        since: None,
    });
    match kill_switch_line(&ks, Utc::now()) {
        Some(line) => writeln!(
            out,
            "{line}\nno recovery action starts until `vigil actions kill-switch off`"
        )?,
        None => writeln!(out, "kill switch released: recovery actions run again")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::actions::Decision;

    fn action(id: &str, state: ActionState) -> Action {
        Action {
            id: id.to_owned(),
            node: "gpu-node-03".to_owned(),
            script: "reset-gpu".to_owned(),
            alertname: "GpuFellOffBus".to_owned(),
            labels: [("gpu".to_owned(), "5".to_owned())].into(),
            args: [("gpu".to_owned(), "5".to_owned())].into(),
            decision: Decision::Run,
            state,
            reason: "first attempt".to_owned(),
            attempt: 1,
            created_at: "2026-11-27T11:55:00Z".to_owned(),
            updated_at: "2026-11-27T11:55:10Z".to_owned(),
            approved_by: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            signal: None,
            timed_out: false,
            message: String::new(),
            logs_query: String::new(),
        }
    }

    #[test]
    fn results_in_a_few_words() {
        let mut a = action("a", ActionState::Failed);
        a.exit_code = Some(3);
        a.message = "nvidia-smi:\n  GPU busy".to_owned();
        assert_eq!(result_summary(&a), "exit 3: nvidia-smi: GPU busy");
        a.timed_out = true;
        a.signal = Some(9);
        a.message.clear();
        assert_eq!(result_summary(&a), "timed out, signal 9");
        let mut skipped = action("b", ActionState::Recorded);
        skipped.reason = "cooldown: reset-gpu ran on n1 4m ago".to_owned();
        assert_eq!(result_summary(&skipped), skipped.reason);
        assert_eq!(result_summary(&action("c", ActionState::Running)), "");
        assert_eq!(short_id("0123456789abcdef"), "01234567");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }

    #[test]
    fn prefixes_resolve_when_unique() {
        let actions = vec![
            action("7f3a1c00-aaaa", ActionState::Running),
            action("7f3a9d00-bbbb", ActionState::Queued),
            action("7f3a", ActionState::Queued),
        ];
        assert_eq!(resolve(&actions, "7f3a1").unwrap().id, "7f3a1c00-aaaa");
        assert_eq!(resolve(&actions, "7f3a").unwrap().id, "7f3a", "exact wins");
        let e = resolve(&actions[..2], "7f3a").unwrap_err().to_string();
        assert!(
            e.contains(
                "matches 2 actions: 7f3a1c00-aaaa (reset-gpu on gpu-node-03), 7f3a9d00-bbbb"
            ),
            "{e}"
        );
        let e = resolve(&actions, "zz").unwrap_err().to_string();
        assert!(e.starts_with("no action has the id \"zz\""), "{e}");
    }

    #[test]
    fn kill_switch_line_says_who_when_and_why() {
        let now = parse_rfc3339("2026-11-27T12:00:00Z").unwrap();
        let ks = KillSwitch {
            engaged: true,
            by: "alice".to_owned(),
            reason: "firmware rollout".to_owned(),
            since: Some("2026-11-27T11:40:00Z".to_owned()),
        };
        assert_eq!(
            kill_switch_line(&ks, now).unwrap(),
            "KILL SWITCH ENGAGED by alice since 2026-11-27 11:40:00 (20m0s ago): firmware rollout"
        );
        assert!(kill_switch_line(&KillSwitch::default(), now).is_none());
        assert_eq!(
            list_path(Some("gpu 1"), Some("running"), 5),
            "/api/v1/actions?limit=5&node=gpu%201&state=running"
        );
        assert_eq!(decide_path("a/b", false), "/api/v1/actions/a%2Fb/reject");
    }
}
