//! Since when each workload's PeerAuthentication mode holds, as this agent saw it: the verdict
//! calls plaintext to a STRICT workload refused only when it arrived after that.
//!
//! PURE: modes, the policy changes that touched each workload, and the time in; the modes
//! stamped out. A mode is dated by the latest of: when the agent saw it change (or first saw
//! it: it may be older, and the traffic before is then not called refused, only named), the
//! latest policy change the watcher saw that may have touched the workload (a STRICT →
//! PERMISSIVE → STRICT flip between two looks leaves the same mode, yet plaintext accepted
//! while PERMISSIVE was not refused), and the deciding policies' creation. Then
//! [`PUSH_MARGIN`] later: Envoy gets a changed policy only after istiod pushes it.

use std::collections::BTreeMap;

use crate::peer_auth::{EffectiveMode, Since, SinceBasis};
use crate::verdict::Modes;
use crate::Nanos;

/// How long after a policy change its mode is deemed in force in the workload's Envoy: istiod
/// debounces configuration changes (`PILOT_DEBOUNCE_AFTER` 100 ms, up to `PILOT_DEBOUNCE_MAX`
/// 10 s by default) and then pushes them to every proxy (seconds in a large mesh). A connection
/// that started within this margin may have been accepted under the old mode: it is named, not
/// called refused.
pub const PUSH_MARGIN: Nanos = 15 * 1_000_000_000;
// istiod's debounce alone is up to 10 s
const _: () = assert!(PUSH_MARGIN >= 10 * 1_000_000_000);

/// The last mode seen of each workload (without its `since`), and since when.
#[derive(Debug, Default)]
pub struct ModeClock {
    seen: BTreeMap<(String, String), (EffectiveMode, Nanos)>,
}

impl ModeClock {
    /// Stamp each of `modes` (every workload's, as resolved at `now`) with since when it holds:
    /// when it last changed as seen here, or the latest policy change that may have touched it
    /// (`last_change(namespace, workload)`, from the watcher's
    /// [`crate::peer_auth::ChangeLog`]), never before the deciding policies' creation (`since`
    /// from [`crate::peer_auth::modes_of`]); plus [`PUSH_MARGIN`]. Workloads not in `modes` are
    /// forgotten.
    pub fn stamp(
        &mut self,
        modes: &mut Modes,
        now: Nanos,
        last_change: impl Fn(&str, &str) -> Option<Nanos>,
    ) {
        self.seen.retain(|key, _| modes.contains_key(key));
        for (key, mode) in modes.iter_mut() {
            let created = mode.since.take().map_or(0, |s| s.at);
            let touched = last_change(&key.0, &key.1).unwrap_or(0);
            let changed = match self.seen.get_mut(key) {
                // the same mode, unless a policy change touched it since: then it may have
                // been another in between, and holds for sure only since that change
                Some((seen, at)) if seen == mode => {
                    *at = (*at).max(touched);
                    *at
                }
                _ => {
                    let at = now.max(touched);
                    self.seen.insert(key.clone(), (mode.clone(), at));
                    at
                }
            };
            mode.since = Some(Since {
                at: changed.max(created).saturating_add(PUSH_MARGIN),
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

    /// Deemed in force [`PUSH_MARGIN`] after `at`.
    const fn agent(at: Nanos) -> Option<Since> {
        Some(Since {
            at: at + PUSH_MARGIN,
            basis: SinceBasis::Agent,
        })
    }

    fn no_change(_: &str, _: &str) -> Option<Nanos> {
        None
    }

    #[test]
    fn a_mode_holds_since_it_was_first_seen_or_last_changed() {
        let mut clock = ModeClock::default();
        // first seen at start-up (the policy is older): since then
        let mut m = modes(Mode::Permissive, Some(10));
        clock.stamp(&mut m, 100, no_change);
        assert_eq!(since(&m), agent(100));
        // unchanged: still since then
        let mut m = modes(Mode::Permissive, Some(10));
        clock.stamp(&mut m, 200, no_change);
        assert_eq!(since(&m), agent(100));
        // STRICT at 300: since 300, and it stays so
        let mut m = modes(Mode::Strict, Some(10));
        clock.stamp(&mut m, 300, no_change);
        assert_eq!(since(&m), agent(300));
        let mut m = modes(Mode::Strict, Some(10));
        clock.stamp(&mut m, 400, no_change);
        assert_eq!(since(&m), agent(300));
        // a policy created after the agent saw the change (a clock ahead of ours): its time
        let mut m = modes(Mode::Strict, Some(350));
        clock.stamp(&mut m, 500, no_change);
        assert_eq!(since(&m), agent(350));
        // gone, then back: since it came back
        clock.stamp(&mut Modes::new(), 600, no_change);
        let mut m = modes(Mode::Strict, None);
        clock.stamp(&mut m, 700, no_change);
        assert_eq!(since(&m), agent(700));
    }

    /// STRICT seen at 100; the policy goes PERMISSIVE at 150 and back to STRICT at 160, both
    /// between two looks: the look at 200 sees STRICT again, yet it holds only since 160 (the
    /// plaintext accepted in between was not refused); later looks keep that; a change of
    /// another workload's policy moves nothing.
    #[test]
    fn a_flip_between_two_looks_dates_the_mode_by_the_last_change() {
        let mut clock = ModeClock::default();
        let mut m = modes(Mode::Strict, Some(10));
        clock.stamp(&mut m, 100, no_change);
        assert_eq!(since(&m), agent(100));
        let flipped = |ns: &str, w: &str| ((ns, w) == ("foo", "web")).then_some(160);
        let mut m = modes(Mode::Strict, Some(10));
        clock.stamp(&mut m, 200, flipped);
        assert_eq!(since(&m), agent(160));
        let mut m = modes(Mode::Strict, Some(10));
        clock.stamp(&mut m, 300, no_change);
        assert_eq!(since(&m), agent(160), "the change is remembered");
        let elsewhere = |ns: &str, _: &str| (ns == "bar").then_some(250);
        let mut m = modes(Mode::Strict, Some(10));
        clock.stamp(&mut m, 400, elsewhere);
        assert_eq!(since(&m), agent(160));
        // a change seen with the new mode: dated when seen, never before the change
        let mut m = modes(Mode::Permissive, Some(10));
        clock.stamp(&mut m, 500, |_, _| Some(450));
        assert_eq!(since(&m), agent(500));
    }

    /// Envoy gets a change after istiod's push: a connection that started within the margin
    /// after the change, or after the policy's creation, is not after `since`.
    #[test]
    fn strict_is_deemed_in_force_only_a_margin_after_the_change() {
        let mut clock = ModeClock::default();
        let mut m = modes(Mode::Strict, Some(1_000));
        clock.stamp(&mut m, 900, no_change);
        let at = since(&m).map_or(0, |s| s.at);
        assert_eq!(at, 1_000 + PUSH_MARGIN, "the creation, plus the margin");
    }
}
