"""The Redis key schema of a run, in one place.

Every key of a run starts with ``{prefix}:{<run id>}:``. The braces make the
run id a hash tag, so Redis Cluster keeps a whole run on one slot and the
multi-key commands of a run stay legal there. Every key gets a time-to-live
(`RunKeys.ttl`), refreshed by the master while the run is alive, so the keys
of a crashed run expire on their own.

=====================================  ======  ===============================
key                                    type    contains
=====================================  ======  ===============================
``…:mailbox:master``                   list    messages to the master
``…:mailbox:monitor``                  list    heartbeats, to the monitor
``…:mailbox:canceller``                list    cancel requests
``…:mailbox:worker:<id>``              list    assignments to one worker
``…:mailbox:worker:<id>:control``      list    cancels, read beside a module
``…:master``                           string  the live master's identity; a
                                               lease of one heartbeat timeout
``…:workers``                          hash    worker id -> pid and host
``…:state``                            string  ``running``, ``finished`` or
                                               ``cancelled``
``…:result:<module>:<attempt>``        string  a large result, signed
=====================================  ======  ===============================
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "pipeline_actors"
DEFAULT_TTL = 3600.0


@dataclass(frozen=True)
class RunKeys:
    """Builds the Redis keys of one run."""

    prefix: str
    run_id: str
    ttl: float = DEFAULT_TTL

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.run_id}}}"

    def mailbox(self, address: str) -> str:
        return f"{self.base}:mailbox:{address}"

    @property
    def master(self) -> str:
        return f"{self.base}:master"

    @property
    def workers(self) -> str:
        return f"{self.base}:workers"

    @property
    def state(self) -> str:
        return f"{self.base}:state"

    def result(self, module: str, attempt: int) -> str:
        return f"{self.base}:result:{module}:{attempt}"

    @property
    def pattern(self) -> str:
        """Return a SCAN pattern matching every key of the run."""
        return f"{self.prefix}:{{{self.run_id}}}:*"

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))
