"""The Python twin of transforms/testing/probe (Rust) and transforms-js/probe:
reports the event record the host gave it, so a test can check that
transforms in every language see the same fields (contract 0.2: the host
reads the event once).  Config key `field`: a path for `event_field`."""

import json

from ztbridge_sdk import Info, done, event_field, key, state_kind_name
from wit_world.imports import host


class Transform:
    def describe(self):
        return Info(name="probe-py", version="0.2.0", description="reports the event record (tests)",
                    egress=[], config=[key("field", "")], needs_random=True)

    def start(self, e):
        path = host.config_get("field")
        if path is None:
            path = "extra.0.name"
        out = {
            "event_id": e.event_id,
            "alert_id": e.alert_id,
            "severity": e.severity.name.lower(),
            "severity_text": e.severity_text,
            "state": e.state,
            "state_kind": state_kind_name(e),
            "state_class": e.state_class,
            "detected_at": e.detected_at,
            "detected_text": e.detected_text,
            "updated_at": e.updated_at,
            "updated_text": e.updated_text,
            "user": e.user,
            "paths": e.paths,
            "shares": e.shares,
            "client_ips": e.client_ips,
            "policy": e.policy,
            "clusters": e.clusters,
            "detectors": e.detectors,
            "signal_strength": e.signal_strength,
            "event_source": e.event_source,
            "console_url": e.console_url,
            "protection_mode": e.protection_mode,
            "snapshots": e.snapshots,
            "raw_length": len(e.raw.encode("utf-8")),
            "field": event_field(path),
        }
        return done(json.dumps(out, ensure_ascii=False))

    def resume(self, responses):
        return done("probe-py")
