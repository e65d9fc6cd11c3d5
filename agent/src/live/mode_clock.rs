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

/// Workloads remembered at most between two full looks.
const MAX_REMEMBERED: usize = 65_536;

/// What a stamp covers: every workload the verdicts judge (the API: known ones and those seen
/// only in traffic), or only some (the metrics: the known ones), which must not make the clock
/// forget the others and date them anew at the next full look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Covers {
    All,
    Some,
}

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
    /// from [`crate::peer_auth::modes_of`]); plus [`PUSH_MARGIN`]. When `modes` covers every
    /// workload ([`Covers::All`]), the workloads not in it are forgotten.
    pub fn stamp(
        &mut self,
        modes: &mut Modes,
        now: Nanos,
        last_change: impl Fn(&str, &str) -> Option<Nanos>,
        covers: Covers,
    ) {
        // a partial look forgets too once the clock holds more than it may (workloads come
        // and go while nobody asks the API)
        if covers == Covers::All || self.seen.len() > MAX_REMEMBERED {
            self.seen.retain(|key, _| modes.contains_key(key));
        }
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
        clock.stamp(&mut m, 100, no_change, Covers::All);
        assert_eq!(since(&m), agent(100));
        // unchanged: still since then
        let mut m = modes(Mode::Permissive, Some(10));
        clock.stamp(&mut m, 200, no_change, Covers::All);
        assert_eq!(since(&m), agent(100));
        // STRICT at 300: since 300, and it stays so
        let mut m = modes(Mode::Strict, Some(10));
        clock.stamp(&mut m, 300, no_change, Covers::All);
        assert_eq!(since(&m), agent(300));
        let mut m = modes(Mode::Strict, Some(10));
        clock.stamp(&mut m, 400, no_change, Covers::All);
        assert_eq!(since(&m), agent(300));
        // a policy created after the agent saw the change (a clock ahead of ours): its time
        let mut m = modes(Mode::Strict, Some(350));
        clock.stamp(&mut m, 500, no_change, Covers::All);
        assert_eq!(since(&m), agent(350));
        // gone, then back: since it came back
        clock.stamp(&mut Modes::new(), 600, no_change, Covers::All);
        let mut m = modes(Mode::Strict, None);
        clock.stamp(&mut m, 700, no_change, Covers::All);
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
        clock.stamp(&mut m, 100, no_change, Covers::All);
        assert_eq!(since(&m), agent(100));
        let flipped = |ns: &str, w: &str| ((ns, w) == ("foo", "web")).then_some(160);
        let mut m = modes(Mode::Strict, Some(10));
        clock.stamp(&mut m, 200, flipped, Covers::All);
        assert_eq!(since(&m), agent(160));
        let mut m = modes(Mode::Strict, Some(10));
        clock.stamp(&mut m, 300, no_change, Covers::All);
        assert_eq!(since(&m), agent(160), "the change is remembered");
        let elsewhere = |ns: &str, _: &str| (ns == "bar").then_some(250);
        let mut m = modes(Mode::Strict, Some(10));
        clock.stamp(&mut m, 400, elsewhere, Covers::All);
        assert_eq!(since(&m), agent(160));
        // a change seen with the new mode: dated when seen, never before the change
        let mut m = modes(Mode::Permissive, Some(10));
        clock.stamp(&mut m, 500, |_, _| Some(450), Covers::All);
        assert_eq!(since(&m), agent(500));
    }

    /// Envoy gets a change after istiod's push: a connection that started within the margin
    /// after the change, or after the policy's creation, is not after `since`.
    #[test]
    fn strict_is_deemed_in_force_only_a_margin_after_the_change() {
        let mut clock = ModeClock::default();
        let mut m = modes(Mode::Strict, Some(1_000));
        clock.stamp(&mut m, 900, no_change, Covers::All);
        let at = since(&m).map_or(0, |s| s.at);
        assert_eq!(at, 1_000 + PUSH_MARGIN, "the creation, plus the margin");
    }

    /// A look at some workloads (the metrics publish the known ones) does not make the clock
    /// forget the others (seen only in traffic): the next full look keeps their date.
    #[test]
    fn a_partial_look_forgets_nothing() {
        let mut clock = ModeClock::default();
        let other = ("foo".to_owned(), "from-traffic".to_owned());
        let mut all = modes(Mode::Strict, Some(10));
        let strict = all.values().next().cloned().unwrap_or_default();
        all.insert(other.clone(), strict);
        clock.stamp(&mut all, 100, no_change, Covers::All);
        let mut known = modes(Mode::Strict, Some(10));
        clock.stamp(&mut known, 200, no_change, Covers::Some);
        let mut all = modes(Mode::Strict, Some(10));
        let strict = all.values().next().cloned().unwrap_or_default();
        all.insert(other.clone(), strict);
        clock.stamp(&mut all, 300, no_change, Covers::All);
        assert_eq!(all.get(&other).and_then(|m| m.since), agent(100));
        // a full look forgets what it does not cover
        clock.stamp(
            &mut modes(Mode::Strict, Some(10)),
            400,
            no_change,
            Covers::All,
        );
        let mut back = Modes::new();
        let fresh = modes(Mode::Strict, Some(10));
        back.insert(
            other.clone(),
            fresh.values().next().cloned().unwrap_or_default(),
        );
        clock.stamp(&mut back, 500, no_change, Covers::All);
        assert_eq!(back.get(&other).and_then(|m| m.since), agent(500));
    }

    /// Partial looks alone keep the clock bounded.
    #[test]
    fn partial_looks_stay_bounded() {
        let mut clock = ModeClock::default();
        let strict = modes(Mode::Strict, Some(10));
        let m = strict.values().next().cloned().unwrap_or_default();
        for i in 0..3 * MAX_REMEMBERED / 1024 {
            let mut some: Modes = (0..1024)
                .map(|j| (("ns".to_owned(), format!("w{i}-{j}")), m.clone()))
                .collect();
            clock.stamp(&mut some, 100, no_change, Covers::Some);
            assert!(clock.seen.len() <= MAX_REMEMBERED + 1024);
        }
    }
}
