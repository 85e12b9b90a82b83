"""The alert engine: pure Python, no Kafka or Faust, fed one reading at a time.

:class:`AlertEngine` is the entry point; docs/alerts.md describes the semantics. The Faust agents
own the I/O: they feed readings and rule changes in, publish the returned events on
``alerts.events``, and write a meter's durable state to their table only when the outcome says it
changed (transitions and period boundaries, not every reading).
"""

from streams.alerting.engine import AlertEngine, Outcome, SilenceOutcome
from streams.alerting.policy import FleetPolicy
from streams.alerting.rules import RuleError
from streams.alerting.state import FleetDurable, MeterDurable, decode_fleet, decode_meter, encode_state

__all__ = [
    "AlertEngine",
    "FleetDurable",
    "FleetPolicy",
    "MeterDurable",
    "Outcome",
    "RuleError",
    "SilenceOutcome",
    "decode_fleet",
    "decode_meter",
    "encode_state",
]
