"""What the rules and dashboards are parameterised by: the verdict engine's policy (the agent's
defaults, agent/src/verdict.rs and agent/src/cli.rs; scripts/check-monitoring.sh checks that
they still agree), the window and the scrape job.

The committed files use the defaults; `generate.py --window 20s --resolution 1s` makes the
variant the live test loads (the same code, another window)."""
from dataclasses import dataclass, field

# agent/src/verdict.rs DEFAULT_EXEMPT_PORTS: istiod's control plane and Istio's plaintext ports
DEFAULT_EXEMPT_PORTS = (15010, 15012, 15014, 15017, 15020, 15021, 15090)
# agent/src/cli.rs defaults: --min-connections, --max-unknown-ratio, --window
DEFAULT_MIN_CONNECTIONS = 5
DEFAULT_MAX_UNKNOWN_RATIO = 0.1
DEFAULT_WINDOW = "24h"

# where runbook_url points: docs/runbooks/<alert>.md of the repository
RUNBOOK_BASE = "https://github.com/meshwatch/meshwatch/blob/main/docs/runbooks/"

# dashboard UIDs: stable, links between dashboards (and from outside) use them
UID_MIGRATION = "meshwatch-migration"
UID_WORKLOAD = "meshwatch-workload"
UID_AGENT = "meshwatch-agent"

# label sets
# an edge as the recording rules key it; `origin` says how the client came (direct,
# kubelet_probe, nodeport: a kubelet probe is not just "node"), `direct` for the series of
# agents that did not label it
EDGE = ("source_namespace", "source_workload", "destination_namespace", "destination_workload",
        "destination_port", "security", "mesh", "origin")
# what matches one connection's series across reporters (older agents' carry no origin)
EDGE_REPORTED = EDGE[:7]
DEST = ("destination_namespace", "destination_workload")


@dataclass(frozen=True)
class Config:
    # how far back a verdict looks (the agent's --window)
    window: str = DEFAULT_WINDOW
    # precision of "last seen" (and of "drained"): not shorter than the rule evaluation interval
    resolution: str = "1m"
    # the scrape job of the agents (for `up`)
    job: str = "meshwatch"
    min_connections: int = DEFAULT_MIN_CONNECTIONS
    max_unknown_ratio: float = DEFAULT_MAX_UNKNOWN_RATIO
    exempt_ports: tuple = field(default=DEFAULT_EXEMPT_PORTS)

    @property
    def exempt_regex(self):
        return "|".join(str(p) for p in sorted(self.exempt_ports))


def by(labels):
    return ", ".join(labels)
