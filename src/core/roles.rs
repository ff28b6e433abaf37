//! What each role may do, as data (the table in the domain notes). The room checks it on every
//! control action and on publishing; the forwarding policy reads the zone rules.

use super::room::Role;

/// Host and participant actions carried by signalling `control` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Admit,
    Deny,
    Move,
    Mute,
    Unmute,
    Remove,
    Lock,
    Unlock,
    Spotlight,
    RaiseHand,
    LowerHand,
    CallWitness,
    DismissWitness,
    /// Admit whoever has waited longest in the lobby (the reception queue).
    CallNext,
    /// Pause the recording for a statutory reason (休庭, non-public evidence); it goes into the
    /// manifest. Resume ends the pause.
    PauseRecording,
    ResumeRecording,
}

/// A role's permissions.
#[derive(Debug)]
pub struct RolePolicy {
    /// May send audio/video.
    pub publish: bool,
    /// Joins straight into the main zone (never waits in the lobby) and may join a locked session.
    pub host: bool,
    /// Control actions this role may take on others (raising one's own hand is in the list too).
    pub actions: &'static [Action],
    /// Keeps the record (笔录): may write notes stamped with the session's timecode.
    pub notes: bool,
}

use Action::*;

const PRESIDING: &[Action] = &[
    Admit,
    Deny,
    Move,
    Mute,
    Unmute,
    Remove,
    Lock,
    Unlock,
    Spotlight,
    RaiseHand,
    LowerHand,
    CallWitness,
    DismissWitness,
    CallNext,
    PauseRecording,
    ResumeRecording,
];
const MODERATING: &[Action] = &[
    Admit,
    Deny,
    Move,
    Mute,
    Unmute,
    Remove,
    Lock,
    Unlock,
    Spotlight,
    RaiseHand,
    LowerHand,
    CallNext,
    PauseRecording,
    ResumeRecording,
];
const CLERK: &[Action] = &[Admit, Deny, RaiseHand, LowerHand, CallNext];
const ATTENDING: &[Action] = &[RaiseHand, LowerHand];

pub const fn policy(role: Role) -> &'static RolePolicy {
    match role {
        Role::Judge => &RolePolicy { publish: true, host: true, actions: PRESIDING, notes: true },
        Role::Mediator | Role::PetitionOfficer | Role::Leader => {
            &RolePolicy { publish: true, host: true, actions: MODERATING, notes: true }
        }
        Role::Clerk => &RolePolicy { publish: true, host: true, actions: CLERK, notes: true },
        Role::Party | Role::Counsel | Role::Counsellor | Role::Interpreter | Role::Witness => {
            &RolePolicy { publish: true, host: false, actions: ATTENDING, notes: false }
        }
        Role::Observer => &RolePolicy { publish: false, host: false, actions: &[], notes: false },
    }
}

/// Whether a role must consent to the online proceeding and to recording before joining: the
/// parties and their helpers do; hosts run the session, and an observer (supervision) publishes
/// nothing and is not a party to it.
pub fn consents(role: Role) -> bool {
    !(policy(role).host || role == Role::Observer)
}

impl RolePolicy {
    pub fn may(&self, a: Action) -> bool {
        self.actions.contains(&a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permission_table_matches_the_domain_notes() {
        // (role, publish, host, may admit, may call a witness, may raise a hand)
        let table = [
            (Role::Judge, true, true, true, true, true),
            (Role::Clerk, true, true, true, false, true),
            (Role::Mediator, true, true, true, false, true),
            (Role::PetitionOfficer, true, true, true, false, true),
            (Role::Leader, true, true, true, false, true),
            (Role::Party, true, false, false, false, true),
            (Role::Counsel, true, false, false, false, true),
            (Role::Witness, true, false, false, false, true),
            (Role::Observer, false, false, false, false, false),
        ];
        for (role, publish, host, admit, call, hand) in table {
            let p = policy(role);
            assert_eq!(
                (p.publish, p.host, p.may(Admit), p.may(CallWitness), p.may(RaiseHand)),
                (publish, host, admit, call, hand),
                "{role:?}"
            );
        }
    }
}
