//! The pairing rules of the contract, as a pure function of who is in the session.

/// What a new connection does to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinPlan {
    /// Take the free slot with this role.
    Take { slot: usize, role: String },
    /// A live peer has this role: it is closed with 4001 and the newcomer takes its slot.
    Replace { slot: usize, role: String },
    /// Two peers already: refused with 409 before the upgrade.
    Full,
}

/// Roles given to connections that name none, in order.
const DEFAULT_ROLES: [&str; 2] = ["a", "b"];

/// `slots` holds the roles of the live peers.
pub fn plan_join(slots: [Option<&str>; 2], role: Option<&str>) -> JoinPlan {
    let free = slots.iter().position(|s| s.is_none());
    let role = match role {
        Some(r) => {
            if let Some(slot) = slots.iter().position(|s| *s == Some(r)) {
                return JoinPlan::Replace {
                    slot,
                    role: r.to_string(),
                };
            }
            r
        }
        None => match DEFAULT_ROLES.iter().find(|d| !slots.contains(&Some(**d))) {
            Some(d) => d,
            None => return JoinPlan::Full,
        },
    };
    match free {
        Some(slot) => JoinPlan::Take {
            slot,
            role: role.to_string(),
        },
        None => JoinPlan::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(slot: usize, role: &str) -> JoinPlan {
        JoinPlan::Take {
            slot,
            role: role.into(),
        }
    }

    #[test]
    fn pairing_rules() {
        assert_eq!(plan_join([None, None], None), take(0, "a"));
        assert_eq!(plan_join([Some("a"), None], None), take(1, "b"));
        assert_eq!(plan_join([None, Some("a")], None), take(0, "b"));
        assert_eq!(plan_join([Some("a"), Some("b")], None), JoinPlan::Full);
        assert_eq!(
            plan_join([Some("desktop"), None], Some("mobile")),
            take(1, "mobile")
        );
        assert_eq!(
            plan_join([Some("desktop"), Some("mobile")], Some("mobile")),
            JoinPlan::Replace {
                slot: 1,
                role: "mobile".into()
            }
        );
        assert_eq!(
            plan_join([Some("desktop"), Some("mobile")], Some("agent")),
            JoinPlan::Full
        );
        assert_eq!(
            plan_join([Some("desktop"), Some("mobile")], None),
            JoinPlan::Full
        );
        assert_eq!(plan_join([Some("desktop"), None], None), take(1, "a"));
    }
}
