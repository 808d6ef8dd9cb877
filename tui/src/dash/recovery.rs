//! The actions view's operator commands: approve or reject the selected recovery
//! action, engage or release the kill switch. Each asks first ([`ConfirmPrompt`]); a
//! yes becomes a [`RecoveryRequest`] effect that the event loop POSTs, and the
//! collector's answer comes back as [`super::state::Action::RecoveryAnswered`], which
//! puts the changed action (or switch) into the state at once, ahead of the next round.

use serde_json::Value;
use vigil_proto::actions::{
    Action as RecoveryAction, ActionState, ApproveRequest, KillSwitch, KillSwitchRequest,
};

use super::state::{Effect, Mode, Notice, State};
use crate::actions::{decide_path, short_id};
use crate::client::{Client, unwrap_data};

/// What a prompt asks the operator to confirm.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirm {
    Approve(Box<RecoveryAction>),
    Reject(Box<RecoveryAction>),
    /// Engage (true) or release (false) the kill switch.
    KillSwitch {
        engage: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConfirmPrompt {
    pub confirm: Confirm,
    /// The kill switch's reason, typed in the prompt (optional).
    pub reason: String,
}

impl ConfirmPrompt {
    /// Whether the prompt takes typed text (then Enter confirms, not `y`).
    pub fn takes_text(&self) -> bool {
        matches!(self.confirm, Confirm::KillSwitch { .. })
    }
}

/// A POST the event loop is asked to make.
#[derive(Debug, Clone, PartialEq)]
pub enum RecoveryRequest {
    Approve { id: String, by: String },
    Reject { id: String, by: String },
    KillSwitch(KillSwitchRequest),
}

impl RecoveryRequest {
    pub fn path_and_body(&self) -> (String, Value) {
        let approve = |id: &str, by: &str, yes: bool| {
            let body = ApproveRequest { by: by.to_owned() };
            (
                decide_path(id, yes),
                serde_json::to_value(body).unwrap_or_default(),
            )
        };
        match self {
            RecoveryRequest::Approve { id, by } => approve(id, by, true),
            RecoveryRequest::Reject { id, by } => approve(id, by, false),
            RecoveryRequest::KillSwitch(body) => (
                "/api/v1/actions/kill-switch".to_owned(),
                serde_json::to_value(body).unwrap_or_default(),
            ),
        }
    }

    fn verb(&self) -> &'static str {
        match self {
            RecoveryRequest::Approve { .. } => "approve",
            RecoveryRequest::Reject { .. } => "reject",
            RecoveryRequest::KillSwitch(r) if r.engaged => "engaging the kill switch",
            RecoveryRequest::KillSwitch(_) => "releasing the kill switch",
        }
    }
}

/// What the collector answered a [`RecoveryRequest`] with.
#[derive(Debug, Clone, PartialEq)]
pub enum RecoveryAnswer {
    Action(Box<RecoveryAction>),
    KillSwitch(KillSwitch),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryOutcome {
    pub request: RecoveryRequest,
    pub result: Result<RecoveryAnswer, String>,
}

/// Makes the POST; the outcome for [`super::state::update`].
pub async fn perform(client: &Client, request: RecoveryRequest) -> RecoveryOutcome {
    let (path, body) = request.path_and_body();
    let unreadable = |e: serde_json::Error| {
        format!(
            "{} failed: POST {path}: unreadable answer: {e}",
            request.verb()
        )
    };
    let result = match client.post(&path, &body).await.and_then(unwrap_data) {
        Ok(answer) => match &request {
            RecoveryRequest::KillSwitch(_) => serde_json::from_value(answer)
                .map(RecoveryAnswer::KillSwitch)
                .map_err(unreadable),
            _ => serde_json::from_value(answer)
                .map(|a| RecoveryAnswer::Action(Box::new(a)))
                .map_err(unreadable),
        },
        Err(e) => Err(format!("{} failed: {e:#}", request.verb())),
    };
    RecoveryOutcome { request, result }
}

fn error(state: &mut State, text: String) {
    state.notice = Some(Notice { text, error: true });
}

/// `a` and `x`: ask to approve or reject the selected action, if it awaits approval.
pub fn ask_decide(state: &mut State, approve: bool) {
    let Some(action) = state.selected_action() else {
        return;
    };
    if action.state != ActionState::AwaitingApproval {
        let verb = if approve { "approve" } else { "reject" };
        let text = format!(
            "only an action awaiting approval can be {verb}d; {} is {}",
            short_id(&action.id),
            action.state.as_str()
        );
        return error(state, text);
    }
    let action = Box::new(action.clone());
    let confirm = if approve {
        Confirm::Approve(action)
    } else {
        Confirm::Reject(action)
    };
    state.notice = None;
    state.mode = Mode::Confirm(Box::new(ConfirmPrompt {
        confirm,
        reason: String::new(),
    }));
}

/// `K`: ask to flip the kill switch.
pub fn ask_kill_switch(state: &mut State) {
    let recovery = &state.data.recovery;
    if recovery.unsupported {
        return error(
            state,
            "this collector has no recovery actions API: no kill switch to flip".to_owned(),
        );
    }
    if state.data.taken_at.is_none() {
        return;
    }
    let engage = !recovery.kill_switch.engaged;
    state.notice = None;
    state.mode = Mode::Confirm(Box::new(ConfirmPrompt {
        confirm: Confirm::KillSwitch { engage },
        reason: String::new(),
    }));
}

/// The prompt's yes: the request to make.
pub fn confirmed(state: &mut State) -> Option<Effect> {
    let Mode::Confirm(prompt) = std::mem::replace(&mut state.mode, Mode::Normal) else {
        return None;
    };
    let by = state.operator.clone();
    let (request, doing) = match prompt.confirm {
        Confirm::Approve(a) => (
            RecoveryRequest::Approve {
                id: a.id.clone(),
                by,
            },
            format!("approving {} ...", short_id(&a.id)),
        ),
        Confirm::Reject(a) => (
            RecoveryRequest::Reject {
                id: a.id.clone(),
                by,
            },
            format!("rejecting {} ...", short_id(&a.id)),
        ),
        Confirm::KillSwitch { engage } => (
            RecoveryRequest::KillSwitch(KillSwitchRequest {
                engaged: engage,
                by,
                reason: prompt.reason.trim().to_owned(),
            }),
            if engage {
                "engaging the kill switch ...".to_owned()
            } else {
                "releasing the kill switch ...".to_owned()
            },
        ),
    };
    state.notice = Some(Notice {
        text: doing,
        error: false,
    });
    Some(Effect::Recovery(request))
}

/// The collector's answer: the changed action or switch goes into the state now.
pub fn answered(state: &mut State, outcome: RecoveryOutcome) {
    let answer = match outcome.result {
        Ok(answer) => answer,
        Err(text) => return error(state, text),
    };
    let recovery = &mut state.data.recovery;
    let text = match answer {
        RecoveryAnswer::Action(a) => {
            let done = match outcome.request {
                RecoveryRequest::Approve { .. } => "approved",
                _ => "rejected",
            };
            let text = format!(
                "{done} {} ({} on {}): now {}",
                short_id(&a.id),
                a.script,
                a.node,
                a.state.as_str()
            );
            if let Some(slot) = recovery.actions.iter_mut().find(|x| x.id == a.id) {
                *slot = *a;
            }
            text
        }
        RecoveryAnswer::KillSwitch(ks) => {
            let text = if ks.engaged {
                "kill switch engaged: no recovery action starts".to_owned()
            } else {
                "kill switch released: recovery actions run again".to_owned()
            };
            recovery.kill_switch = ks;
            text
        }
    };
    state.notice = Some(Notice { text, error: false });
}
