//! The dashboard's state and the only code that changes it: [`update`] applies one
//! [`Action`] and may ask for an [`Effect`] (I/O that the event loop performs).
//!
//! Views (`views/`) read the state and never change it; input (`keys.rs`) turns key
//! presses and mouse events into actions. The logs view shows how a view plugs in: a
//! [`View`] variant, its UI state and data beside [`FleetUi`] ([`LogsUi`]), and an
//! effect for its requests whose answer comes back as an action; the actions view's
//! approvals and kill switch ([`super::recovery`]) follow the same way.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

pub use super::logs::LogsUi;
use super::logs::{LogRequest, LogsAnswer};
use super::model::{Alert, AlertState, NodeRow, Snapshot, severity_rank};
pub use super::recovery::{Confirm, ConfirmPrompt, RecoveryOutcome, RecoveryRequest};
pub use super::update::update;
use vigil_proto::actions::Action as RecoveryAction;

/// The screens, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Fleet,
    Node,
    Alerts,
    /// The recovery audit.
    Actions,
    Logs,
}

impl View {
    pub const ALL: [View; 5] = [
        View::Fleet,
        View::Node,
        View::Alerts,
        View::Actions,
        View::Logs,
    ];

    pub fn title(self) -> &'static str {
        match self {
            View::Fleet => "Fleet",
            View::Node => "Node",
            View::Alerts => "Alerts",
            View::Actions => "Actions",
            View::Logs => "Logs",
        }
    }
}

/// How the fleet table is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Health,
    Name,
    Util,
    Temp,
    Power,
    Cpu,
    Mem,
    Alerts,
    LastSeen,
}

impl SortKey {
    pub const ALL: [SortKey; 9] = [
        SortKey::Health,
        SortKey::Name,
        SortKey::Util,
        SortKey::Temp,
        SortKey::Power,
        SortKey::Cpu,
        SortKey::Mem,
        SortKey::Alerts,
        SortKey::LastSeen,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Health => "health",
            SortKey::Name => "name",
            SortKey::Util => "util",
            SortKey::Temp => "temp",
            SortKey::Power => "power",
            SortKey::Cpu => "cpu",
            SortKey::Mem => "mem",
            SortKey::Alerts => "alerts",
            SortKey::LastSeen => "seen",
        }
    }
}

/// A node's health as the fleet table shows it; worse sorts first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Down,
    Critical,
    Warning,
    Ok,
}

impl Health {
    pub fn label(self) -> &'static str {
        match self {
            Health::Down => "down",
            Health::Critical => "crit",
            Health::Warning => "warn",
            Health::Ok => "ok",
        }
    }
}

/// A GPU this hot counts as a warning even before a rule fires (H100's slowdown is ~87°C).
pub const HOT_GPU_C: f64 = 85.0;

/// A node row with what the table derives from it, computed once per snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetEntry {
    pub node: NodeRow,
    pub health: Health,
    pub firing: usize,
    pub pending: usize,
    pub gpus_up: usize,
    pub avg_util: Option<f64>,
    pub max_temp: Option<f64>,
    pub power_w: Option<f64>,
    /// Recovery actions queued or running on the node.
    pub recovering: usize,
}

impl FleetEntry {
    pub fn new(node: NodeRow, alerts: &[&Alert], recovering: usize) -> Self {
        let firing = alerts
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .count();
        let pending = alerts.len() - firing;
        let gpus_up = node.gpus.iter().filter(|g| g.up).count();
        let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
        let utils: Vec<f64> = node
            .gpus
            .iter()
            .filter_map(|g| finite(g.util_pct))
            .collect();
        let avg_util = (!utils.is_empty()).then(|| utils.iter().sum::<f64>() / utils.len() as f64);
        let max_temp = node
            .gpus
            .iter()
            .filter_map(|g| finite(g.temp_c))
            .reduce(f64::max);
        let powers: Vec<f64> = node.gpus.iter().filter_map(|g| finite(g.power_w)).collect();
        let power_w = (!powers.is_empty()).then(|| powers.iter().sum());
        let critical = alerts
            .iter()
            .any(|a| a.state == AlertState::Firing && severity_rank(&a.severity) == 0);
        let health = if !node.up {
            Health::Down
        } else if critical || gpus_up < node.gpus.len() {
            Health::Critical
        } else if firing > 0 || max_temp.is_some_and(|t| t >= HOT_GPU_C) {
            Health::Warning
        } else {
            Health::Ok
        };
        Self {
            node,
            health,
            firing,
            pending,
            gpus_up,
            avg_util,
            max_temp,
            power_w,
            recovering,
        }
    }
}

/// Whether the collector answered the last round.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    Connecting,
    Up,
    /// Unreachable since `since`; the last good data stays on screen.
    Down {
        since: DateTime<Utc>,
        error: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetUi {
    /// Index into [`State::visible`].
    pub selected: usize,
    pub sort: Option<SortKey>,
    pub descending: bool,
    pub filter: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeUi {
    pub node: Option<String>,
    pub selected_gpu: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertsUi {
    pub selected: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionsUi {
    /// Index into the snapshot's recovery actions; follows its action across rounds.
    pub selected: usize,
}

/// The silence prompt's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct SilencePrompt {
    pub alert: Alert,
    pub duration: String,
    pub comment: String,
    /// 0 duration, 1 comment.
    pub field: usize,
    pub error: Option<String>,
}

/// What typed characters go to.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    /// Editing the fleet filter (`/`).
    Filter,
    Silence(Box<SilencePrompt>),
    /// Asking y/n before approving, rejecting or flipping the kill switch.
    Confirm(Box<ConfirmPrompt>),
    /// Editing the logs query (`/` in the logs view).
    LogQuery,
    Help,
}

/// A line at the bottom that reports what the last command did.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub text: String,
    pub error: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub collector: String,
    pub now: DateTime<Utc>,
    pub view: View,
    pub mode: Mode,
    pub link: Link,
    /// The last good data; kept while the collector is away.
    pub data: Snapshot,
    /// Node rows with their derived health, in registry order.
    pub fleet: Vec<FleetEntry>,
    /// Indices into `fleet` after filter and sort, in display order.
    pub visible: Vec<usize>,
    pub fleet_ui: FleetUi,
    pub node_ui: NodeUi,
    pub alerts_ui: AlertsUi,
    pub actions_ui: ActionsUi,
    pub logs_ui: LogsUi,
    pub notice: Option<Notice>,
    /// Who approves, rejects and flips the kill switch (`by` in the requests).
    pub operator: String,
    /// Terminal size, for mapping mouse clicks onto rows.
    pub size: (u16, u16),
    pub quit: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Tick(DateTime<Utc>),
    Fetched(Box<Snapshot>),
    FetchFailed(String),
    Resize(u16, u16),
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Left,
    Right,
    /// Select row `n` of the current view's list (a mouse click); a click on the
    /// selected row drills in as Enter does.
    Click(usize),
    Enter,
    Back,
    NextView,
    PrevView,
    GoTo(View),
    ToggleHelp,
    StartFilter,
    FilterChar(char),
    FilterBackspace,
    FilterDone,
    FilterClear,
    NextSort,
    ReverseSort,
    StartSilence,
    PromptChar(char),
    PromptBackspace,
    PromptNextField,
    PromptSubmit,
    Cancel,
    Silenced(Result<String, String>),
    /// Edit the logs query.
    StartLogQuery,
    LogQueryChar(char),
    /// Deletes a character; on an empty query, drops the node filter.
    LogQueryBackspace,
    /// Run the logs query (Enter, in the logs view or while editing it).
    RunLogQuery,
    ToggleTail,
    /// Open the logs of what is selected: a node, its GPU, an alert's node and GPU.
    LogsForSelection,
    LogsFetched(Box<LogsAnswer>),
    /// `a` in the actions view: ask to approve the selected action.
    AskApprove,
    /// `x`: ask to reject it.
    AskReject,
    /// `K`: ask to engage or release the kill switch.
    AskKillSwitch,
    /// Yes to the confirm prompt.
    Confirm,
    RecoveryAnswered(Box<RecoveryOutcome>),
    Quit,
}

/// I/O that an action asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Tell the fetcher which node's details to fetch (None: none).
    Focus(Option<String>),
    /// POST this `PostableSilence`.
    Silence(serde_json::Value),
    /// Search the logs.
    Logs(LogRequest),
    /// Approve, reject, or flip the kill switch.
    Recovery(RecoveryRequest),
    /// Several at once, in order.
    Batch(Vec<Effect>),
}

impl State {
    pub fn new(collector: &str, now: DateTime<Utc>) -> Self {
        Self {
            collector: collector.to_owned(),
            now,
            view: View::Fleet,
            mode: Mode::Normal,
            link: Link::Connecting,
            data: Snapshot::default(),
            fleet: Vec::new(),
            visible: Vec::new(),
            fleet_ui: FleetUi::default(),
            node_ui: NodeUi::default(),
            alerts_ui: AlertsUi::default(),
            actions_ui: ActionsUi::default(),
            logs_ui: LogsUi::default(),
            notice: None,
            operator: "vigil".to_owned(),
            size: (80, 24),
            quit: false,
        }
    }

    /// The fleet entry under the cursor.
    pub fn selected_entry(&self) -> Option<&FleetEntry> {
        self.visible
            .get(self.fleet_ui.selected)
            .and_then(|&i| self.fleet.get(i))
    }

    pub fn selected_alert(&self) -> Option<&Alert> {
        self.data.alerts.get(self.alerts_ui.selected)
    }

    pub fn selected_action(&self) -> Option<&RecoveryAction> {
        self.data.recovery.actions.get(self.actions_ui.selected)
    }

    /// The focused node's entry in the fleet, if it still exists.
    pub fn focused_entry(&self) -> Option<&FleetEntry> {
        let name = self.node_ui.node.as_deref()?;
        self.fleet.iter().find(|e| e.node.name == name)
    }

    /// Replaces the data and recomputes what views derive from it.
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        let selected_name = self.selected_entry().map(|e| e.node.name.clone());
        let selected_action = self.selected_action().map(|a| a.id.clone());
        let mut by_node: BTreeMap<&str, Vec<&Alert>> = BTreeMap::new();
        for a in &snapshot.alerts {
            by_node.entry(a.node.as_str()).or_default().push(a);
        }
        let mut recovering: BTreeMap<&str, usize> = BTreeMap::new();
        for a in &snapshot.recovery.actions {
            if a.state.is_in_flight() {
                *recovering.entry(a.node.as_str()).or_default() += 1;
            }
        }
        self.fleet = snapshot
            .nodes
            .iter()
            .map(|n| {
                let alerts = by_node.get(n.name.as_str()).map_or(&[][..], Vec::as_slice);
                let recovering = recovering.get(n.name.as_str()).copied().unwrap_or(0);
                FleetEntry::new(n.clone(), alerts, recovering)
            })
            .collect();
        self.data = snapshot;
        self.refresh_visible(selected_name.as_deref());
        let alerts = self.data.alerts.len();
        self.alerts_ui.selected = self.alerts_ui.selected.min(alerts.saturating_sub(1));
        // New actions come in on top: the cursor stays on its action, so that `a` never
        // approves another one than the operator looked at.
        let actions = &self.data.recovery.actions;
        let kept = selected_action.and_then(|id| actions.iter().position(|a| a.id == id));
        self.actions_ui.selected = kept
            .unwrap_or(self.actions_ui.selected)
            .min(actions.len().saturating_sub(1));
    }

    /// Filters and sorts `fleet` into `visible`, keeping the cursor on `keep` if given.
    pub fn refresh_visible(&mut self, keep: Option<&str>) {
        let needle = self.fleet_ui.filter.to_lowercase();
        let mut visible: Vec<usize> = self
            .fleet
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                needle.is_empty()
                    || e.node.name.to_lowercase().contains(&needle)
                    || e.health.label() == needle
            })
            .map(|(i, _)| i)
            .collect();
        let fleet = &self.fleet;
        let ui = &self.fleet_ui;
        visible.sort_by(|&a, &b| {
            let (a, b) = (&fleet[a], &fleet[b]);
            let by_value = |x: Option<f64>, y: Option<f64>| {
                // Largest first; absent values last.
                y.unwrap_or(f64::NEG_INFINITY)
                    .total_cmp(&x.unwrap_or(f64::NEG_INFINITY))
            };
            let order = match ui.sort {
                None | Some(SortKey::Health) => a
                    .health
                    .cmp(&b.health)
                    .then_with(|| b.firing.cmp(&a.firing)),
                Some(SortKey::Name) => std::cmp::Ordering::Equal,
                Some(SortKey::Util) => by_value(a.avg_util, b.avg_util),
                Some(SortKey::Temp) => by_value(a.max_temp, b.max_temp),
                Some(SortKey::Power) => by_value(a.power_w, b.power_w),
                Some(SortKey::Cpu) => by_value(a.node.cpu_pct, b.node.cpu_pct),
                Some(SortKey::Mem) => by_value(a.node.mem_pct, b.node.mem_pct),
                Some(SortKey::Alerts) => b.firing.cmp(&a.firing).then(b.pending.cmp(&a.pending)),
                // Longest silent first.
                Some(SortKey::LastSeen) => a.node.last_seen.cmp(&b.node.last_seen),
            }
            .then_with(|| natural_cmp(&a.node.name, &b.node.name));
            if ui.descending {
                order.reverse()
            } else {
                order
            }
        });
        self.visible = visible;
        let keep_at = keep.and_then(|name| {
            self.visible
                .iter()
                .position(|&i| self.fleet[i].node.name == name)
        });
        self.fleet_ui.selected = keep_at
            .unwrap_or(self.fleet_ui.selected)
            .min(self.visible.len().saturating_sub(1));
    }
}

/// Names with numbers in numeric order: gpu-2 before gpu-10.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (head, tail) = s.split_at(s.len() - digits);
        (
            head.to_owned(),
            tail.parse::<u64>().unwrap_or(0),
            s.to_owned(),
        )
    };
    split(a).cmp(&split(b))
}
