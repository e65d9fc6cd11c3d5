//! The dashboard end to end over HTTP: pages rendered from reports of the bundled captures
//! (made by the analyzer library, as `meshwatch analyze --format json` makes them), hostile
//! names through every page, the JSON API, read-only, and the `--agent` merge against local
//! servers that replay answers recorded from real agents (fixtures/agents/record.sh), and
//! `--prometheus` against a server that replays a real Prometheus' answers; both over HTTPS
//! with a bearer token, in front of the agent's own TLS server and authentication.

#[path = "dashboard/agents.rs"]
mod agents;
#[path = "dashboard/api.rs"]
mod api;
#[path = "dashboard/hostile.rs"]
mod hostile;
#[path = "dashboard/prometheus.rs"]
mod prometheus;
#[path = "dashboard/render.rs"]
mod render;
#[path = "dashboard/support.rs"]
mod support;
#[path = "dashboard/tls.rs"]
mod tls;
