//! The PromQL of the cluster view. PURE: a window and a namespace in, query text out.
//!
//! # Counting a window exactly
//!
//! The agents' counters are cumulative and start when an agent starts. Over a window `W`
//! ending at `T`, each series must count what it gained inside the window:
//!
//! - a series that existed before the window counts `last - base` (`base`: its last sample
//!   at or before the window's start);
//! - a series that first appears inside the window counts from zero: all of its value,
//!   including what the agent counted before Prometheus' first scrape of it (`increase()`
//!   loses that: it only sees the growth between the samples it has);
//! - an agent restart resets its counters: the growth before the restart and everything after
//!   it both count (`x - x offset W` goes negative there);
//! - a scrape that fails writes staleness markers: the series must not count as new when the
//!   scrapes come back (an instant `x offset 1m` lookup finds nothing across the gap);
//! - an agent that stopped inside the window keeps what it counted before it stopped (an
//!   instant `x` at `T` finds nothing).
//!
//! One expression does all of this: a subquery walks the window in steps of `S` and adds
//! each step's growth, `cur - prev` where `cur` is the series' last sample in the step and
//! `prev` its last sample before the step (up to `L` earlier: range selectors skip staleness
//! markers, so a scrape gap shorter than `L` is bridged). Where there is no `prev` (a new
//! series) or `cur < prev` (a reset), the step's growth is `cur` itself: the counter started
//! from zero.
//!
//! ```text
//! sum_over_time(sum by (…) ( (last_over_time(x[S]) - last_over_time(x[L] offset S)) >= 0
//!                            or last_over_time(x[S]) )[W:S])
//! ```
//!
//! Without resets the steps telescope: every step's `prev` is the previous step's `cur`, so
//! the sum is `last - base` exactly, in integers (no extrapolation, unlike `increase()`),
//! whatever `S` is. Subquery steps are aligned to multiples of `S`; the query is evaluated at a
//! multiple of `S` (see [`Resolution::eval_time`]) and its range is one millisecond short of a
//! whole number of steps, so Prometheus 2 (ranges closed at the start) and 3 (open) take the
//! same steps and the first step's `prev` is the value at the window's start. What is counted
//! approximately: a counter that climbs past its old value within one step after a reset
//! (its pre-reset growth in that step is lost), and a scrape gap longer than `L` of an agent
//! that kept running (its totals count again when the scrapes come back; `up == 0` names the
//! agent). `cluster::tests` proves each case with promtool against Prometheus' own engine.
//!
//! # Each connection once
//!
//! An agent labels a connection `reporter="destination"` when the destination is a pod of
//! its node, and `reporter="source"` when the source is and the destination is no pod (an
//! address outside the cluster's pods, a node): summed over agents, each connection counts
//! once. Agents before that rule also reported a connection between pods of two nodes from
//! the source's node, with the same edge labels. Summed across agents per `reporter`, the
//! larger of the two sums counts each connection once with either: for an edge only one
//! reporter has a count, or (older agents, a pod destination) both have the same count — and
//! if the destination's agent was down for a while, the source's fills in.

use std::fmt::Write as _;

/// Steps a window is walked in (its resolution): `S = ceil(W / STEPS)`.
pub const STEPS: u64 = 240;
/// The shortest lookback for a series' previous value (Prometheus' default lookback delta).
pub const MIN_LOOKBACK_SECONDS: u64 = 300;

/// The labels of an edge (the connection series' labels but `reporter`; attempts have no
/// `security`, `mesh` and `origin`; series of agents before `origin` have none either).
pub const EDGE_LABELS: &str = "source_namespace, source_workload, destination_namespace, destination_workload, destination_port, security, mesh, origin";
/// The label that marks a series without `origin` while it is counted as `direct` (as in
/// `grafana/mixin/rules.py`); aggregated away.
pub const NO_ORIGIN: &str = "meshwatch_no_origin";
pub const ATTEMPT_LABELS: &str = "source_namespace, source_workload, destination_namespace, destination_workload, destination_port";

pub const CONNECTIONS: &str = "meshwatch_connections_total";
pub const ATTEMPTS: &str = "meshwatch_connection_attempts_total";
pub const DROPS: &str = "meshwatch_capture_dropped_packets_total";
pub const BUILD_INFO: &str = "meshwatch_build_info";
pub const WORKLOAD_INFO: &str = "meshwatch_workload_info";

/// How a window is read: its length, the subqueries' step, and how far before a step a
/// series' previous value is looked for. All in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    /// The window as asked (at least 1 s).
    pub window: u64,
    pub step: u64,
    pub lookback: u64,
}

impl Resolution {
    /// The resolution of a window of `window` seconds.
    pub fn of(window: u64) -> Self {
        let window = window.max(1);
        let step = window.div_ceil(STEPS).max(1);
        Resolution {
            window,
            step,
            lookback: (2 * step).max(MIN_LOOKBACK_SECONDS),
        }
    }

    /// The window walked: a whole number of steps, at least the window asked.
    pub fn walked(&self) -> u64 {
        self.window.div_ceil(self.step) * self.step
    }

    /// When to evaluate: `now` (seconds since the epoch) rounded up to a step, so the last
    /// step includes the latest samples.
    pub fn eval_time(&self, now: u64) -> u64 {
        now.div_ceil(self.step) * self.step
    }

    /// The subquery range and step: a millisecond short of the walked window, so only steps
    /// after the window's start are taken.
    pub fn subquery(&self) -> String {
        format!("[{}ms:{}s]", self.walked() * 1000 - 1, self.step)
    }

    /// The growth of the series of `selector` over the window (see the module doc), summed
    /// by `labels`. The sum is taken at each step (it is linear): `last_over_time` keeps the
    /// metric name that the difference drops, and a series' steps must stay one series.
    /// Summed by `origin`, a series without it (an agent from before the label) counts as
    /// `origin="direct"`, as the recording rules in `grafana/` do: in a fleet of old and new
    /// agents one connection's source- and destination-reported series then fall in one
    /// group, and the `reporter` rule counts it once instead of twice. Such a series is marked
    /// ([`NO_ORIGIN`]) before it is relabelled, so it never takes the label set of the same
    /// agent's series with `origin="direct"` (an agent upgraded in place has both, and a step
    /// can hold both: Prometheus refuses a vector with a label set twice, and so the whole
    /// query); the sum drops the mark and adds the two.
    pub fn growth(&self, selector: &str, labels: &str) -> String {
        let (cur, prev) = self.cur_prev(selector);
        let step = format!("(({cur} - {prev}) >= 0 or {cur})");
        let step = if labels.split(',').any(|l| l.trim() == "origin") {
            format!(
                "(label_replace(label_replace({step}, \"{NO_ORIGIN}\", \"true\", \"origin\", \"\"), \"origin\", \"direct\", \"origin\", \"\"))"
            )
        } else {
            step
        };
        format!(
            "sum_over_time((sum by ({labels}) {step}){})",
            self.subquery()
        )
    }

    /// The times (seconds) of the steps in which each series of `selector` grew (or appeared,
    /// or was reset): `max_over_time` of it is when the series last grew, `min_over_time`
    /// when it first did — to a step.
    fn changed_at(&self, selector: &str, over_time: &str) -> String {
        let (cur, prev) = self.cur_prev(selector);
        format!(
            "{over_time}(((({cur} != {prev}) or ({cur} unless {prev})) * 0 + time()){})",
            self.subquery()
        )
    }

    fn cur_prev(&self, selector: &str) -> (String, String) {
        (
            format!("last_over_time({selector}[{}s])", self.step),
            format!(
                "last_over_time({selector}[{}s] offset {}s)",
                self.lookback, self.step
            ),
        )
    }
}

/// The queries of one cluster report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queries {
    /// Agents scraped in the window (`meshwatch_build_info`).
    pub agents: String,
    /// Connections per edge in the window, each once.
    pub connections: String,
    pub connections_first_seen: String,
    pub connections_last_seen: String,
    /// Connection attempts per edge in the window, each once.
    pub attempts: String,
    pub attempts_first_seen: String,
    pub attempts_last_seen: String,
    /// Agents whose capture dropped packets in the window (by `instance`).
    pub drops: String,
    /// Agent targets with `up == 0` at some time in the window (by `instance`).
    pub agents_down: String,
    /// Workloads with pods on an agent's node, and their data plane.
    pub workloads: String,
    /// The PeerAuthentication modes of those workloads now ([`super::modes`]).
    pub peer_authentications: String,
    /// The first and last step of the window each mode's series showed at: since when the
    /// mode holds ([`super::modes::stamp_since`]).
    pub peer_authentications_first_shown: String,
    pub peer_authentications_last_shown: String,
}

impl Queries {
    /// The queries for `resolution`, limited to destinations in `namespace` when given.
    pub fn new(r: &Resolution, namespace: Option<&str>) -> Self {
        let dst = namespace
            .map(|ns| format!("{{destination_namespace=\"{}\"}}", escape(ns)))
            .unwrap_or_default();
        let own = namespace
            .map(|ns| format!("{{namespace=\"{}\"}}", escape(ns)))
            .unwrap_or_default();
        let w = r.window;
        let conns = format!("{CONNECTIONS}{dst}");
        let attempts = format!("{ATTEMPTS}{dst}");
        let once = |labels: &str, selector: &str| {
            format!(
                "max by ({labels}) ({})",
                r.growth(selector, &format!("reporter, {labels}"))
            )
        };
        let seen = |labels: &str, selector: &str, agg: &str, over_time: &str| {
            format!(
                "{agg} by ({labels}) ({})",
                r.changed_at(selector, over_time)
            )
        };
        Queries {
            agents: format!("count(last_over_time({BUILD_INFO}[{w}s]))"),
            connections: once(EDGE_LABELS, &conns),
            connections_first_seen: seen(EDGE_LABELS, &conns, "min", "min_over_time"),
            connections_last_seen: seen(EDGE_LABELS, &conns, "max", "max_over_time"),
            attempts: once(ATTEMPT_LABELS, &attempts),
            attempts_first_seen: seen(ATTEMPT_LABELS, &attempts, "min", "min_over_time"),
            attempts_last_seen: seen(ATTEMPT_LABELS, &attempts, "max", "max_over_time"),
            drops: format!("{} > 0", r.growth(DROPS, "instance")),
            agents_down: format!(
                "group by (instance) ((min_over_time(up[{w}s]) == 0) and on (job) group by (job) (last_over_time({BUILD_INFO}[{w}s])))"
            ),
            workloads: format!(
                "max by (namespace, workload, mesh) (last_over_time({WORKLOAD_INFO}{own}[{w}s]))"
            ),
            peer_authentications: super::modes::query(&own),
            peer_authentications_first_shown: super::modes::shown_query(&own, r, "min"),
            peer_authentications_last_shown: super::modes::shown_query(&own, r, "max"),
        }
    }
}

/// `s` as the inside of a PromQL double-quoted string.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}
