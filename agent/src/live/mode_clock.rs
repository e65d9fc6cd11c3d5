//! Since when each workload's PeerAuthentication mode holds, as this agent saw it: the verdict
//! calls plaintext to a STRICT workload refused only when it arrived after that.
//!
//! PURE: modes and the time in, the modes stamped out. A mode is stamped with when the agent
//! last saw it change, or when it first saw it (it may be older: the traffic before is then
//! not called refused, only named).

use std::collections::BTreeMap;

use crate::peer_auth::{EffectiveMode, Since, SinceBasis};
use crate::verdict::Modes;
use crate::Nanos;

/// The last mode seen of each workload (without its `since`), and since when.
#[derive(Debug, Default)]
pub struct ModeClock {
    seen: BTreeMap<(String, String), (EffectiveMode, Nanos)>,
}

impl ModeClock {
    /// Stamp each of `modes` (every workload's, as resolved at `now`) with since when it holds:
    /// when it last changed as seen here, never before the deciding policies' creation
    /// (`since` from [`crate::peer_auth::modes_of`]). Workloads not in `modes` are forgotten.
    pub fn stamp(&mut self, modes: &mut Modes, now: Nanos) {
        self.seen.retain(|key, _| modes.contains_key(key));
        for (key, mode) in modes.iter_mut() {
            let created = mode.since.take().map_or(0, |s| s.at);
            let changed = match self.seen.get(key) {
                Some((seen, at)) if seen == mode => *at,
                _ => {
                    self.seen.insert(key.clone(), (mode.clone(), now));
                    now
                }
            };
            mode.since = Some(Since {
                at: changed.max(created),
                basis: SinceBasis::Agent,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer_auth::{Mode, ModeSource};

    fn modes(mode: Mode, created: Option<Nanos>) -> Modes {
        let m = EffectiveMode {
            mode,
            source: ModeSource::Namespace,
            policy: Some("foo/default".into()),
            since: created.map(|at| Since {
                at,
                basis: SinceBasis::Created,
            }),
            ..EffectiveMode::default()
        };
        [(("foo".to_owned(), "web".to_owned()), m)].into()
    }

    fn since(m: &Modes) -> Option<Since> {
        m.values().next().and_then(|m| m.since)
    }

    const fn agent(at: Nanos) -> Option<Since> {
        Some(Since {
            at,
            basis: SinceBasis::Agent,
        })
    }

    #[test]
    fn a_mode_holds_since_it_was_first_seen_or_last_changed() {
        let mut clock = ModeClock::default();
        // first seen at start-up (the policy is older): since then
        let mut m = modes(Mode::Permissive, Some(10));
        clock.stamp(&mut m, 100);
        assert_eq!(since(&m), agent(100));
        // unchanged: still since then
        let mut m = modes(Mode::Permissive, Some(10));
        clock.stamp(&mut m, 200);
        assert_eq!(since(&m), agent(100));
        // STRICT at 300: since 300, and it stays so
        let mut m = modes(Mode::Strict, Some(10));
        clock.stamp(&mut m, 300);
        assert_eq!(since(&m), agent(300));
        let mut m = modes(Mode::Strict, Some(10));
        clock.stamp(&mut m, 400);
        assert_eq!(since(&m), agent(300));
        // a policy created after the agent saw the change (a clock ahead of ours): its time
        let mut m = modes(Mode::Strict, Some(350));
        clock.stamp(&mut m, 500);
        assert_eq!(since(&m), agent(350));
        // gone, then back: since it came back
        clock.stamp(&mut Modes::new(), 600);
        let mut m = modes(Mode::Strict, None);
        clock.stamp(&mut m, 700);
        assert_eq!(since(&m), agent(700));
    }
}
