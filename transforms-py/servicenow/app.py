"""ServiceNow incidents through the Table API (/api/now/table/incident).

One Superna Zero Trust webhook becomes at most two Table API calls:

1. GET  /api/now/table/incident?sysparm_query=correlation_id=<id>: is there
   an incident for this alert already?
2. none, and the alert is open or updated: POST a new incident with
   `correlation_id`, short description, description, impact/urgency from
   the severity, and the optional category, assignment group and caller;
   one exists, alert open/updated: PATCH it with `work_notes`;
   one exists, alert closed (state-kind `closed`: access restored,
   recovered, false positive): PATCH it to Resolved (state 6) with
   `close_code` and `close_notes`;
   none, alert closed: nothing to resolve, done.

`correlation_id` = `superna-zt-<event ID>` (the PagerDuty transform's
dedup key: stable across the alert's updates).  An ID ServiceNow's encoded
query cannot carry as is (a `^`, control characters) or longer than the
field (100) is replaced by `superna-zt-sha256-<hex>`; an event without an
ID gets `superna-zt-body-<hash of the body>` and a warning.

Auth: `token` (OAuth bearer) or `user` + `password` (basic), all secrets.
Errors: 401/403 and 400 are permanent; 429 (with Retry-After) and 5xx are
retryable; a 404 on the incident table means a wrong `instance_url`
(permanent); a 404 on PATCH means the incident was deleted meanwhile: a new
one is created (or, for a close, nothing is left to resolve).  The whole
flow is idempotent: a retry finds the incident the first run created.
"""

import hashlib
import json
import re

from ztbridge_sdk import (
    EgressRule_ConfigUrl,
    Info,
    check,
    config_error,
    config_get,
    config_require,
    done,
    fail,
    get,
    key,
    log,
    permanent,
    request,
    send,
    severity_name,
    single,
    truncate,
)

VERSION = "0.1.0"
TABLE = "/api/now/table/incident"
FIELDS = "sys_id,number,state"
# ServiceNow incident states: 6 Resolved, 7 Closed, 8 Canceled.
RESOLVED = "6"
FINISHED = ("6", "7", "8")
# Superna severity -> ServiceNow impact/urgency (1 high, 2 medium, 3 low).
PRIORITY = {"critical": "1", "major": "2", "warning": "3"}

# What the flow needs between its calls (a fresh instance per flow).
flow = {}


def _clean(text):
    """Event text as plain journal text: no control characters, and no
    `[code]` markers (ServiceNow renders `[code]...[/code]` in journal
    fields as HTML)."""
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", " ", text)
    return re.sub(r"\[(/?)code\]", r"(\1code)", text, flags=re.IGNORECASE)


def correlation_id(e):
    """`superna-zt-<event ID>`, safe in an encoded query, at most 100 characters."""
    if e.event_id is None:
        k = "superna-zt-body-" + hashlib.sha256(e.raw.encode("utf-8")).hexdigest()[:32]
        log("warn", "event has no recognisable event ID: updates cannot be correlated", correlation_id=k)
        return k
    k = "superna-zt-" + e.event_id
    if len(k) > 100 or re.search(r"[\^\x00-\x1f\x7f]", k):
        k = "superna-zt-sha256-" + hashlib.sha256(e.event_id.encode("utf-8")).hexdigest()
    return k


def auth():
    """Request keyword arguments for the configured authentication."""
    token = config_get("token")
    user = config_get("user")
    password = config_get("password")
    if token is not None and user is not None:
        fail(config_error("set either `token` (OAuth bearer) or `user` + `password` (basic), not both"))
    if token is not None:
        return {"bearer": token}
    if user is not None and password is not None:
        return {"basic": (user, password)}
    fail(config_error("no credentials: set `token` (OAuth bearer) or `user` and `password` (basic)"))


def base_url():
    url = config_require("instance_url").rstrip("/")
    if not re.match(r"^https?://[^/?#@]+$", url):
        fail(config_error("`instance_url` must be the instance's address, e.g. https://acme.service-now.com"))
    return url


def details(e):
    """The event's facts, one per line."""
    lines = [
        ("Event ID", e.event_id),
        ("Alert ID", e.alert_id),
        ("Severity", e.severity_text),
        ("State", e.state),
        ("User", e.user),
        ("Client IPs", ", ".join(e.client_ips)),
        ("Shares", ", ".join(e.shares)),
        ("Policy", e.policy),
        ("Clusters", ", ".join(e.clusters)),
        ("Detectors", ", ".join(e.detectors)),
        ("Signal strength", e.signal_strength),
        ("Detected", e.detected_at or e.detected_text),
        ("Protection mode", e.protection_mode),
        ("Snapshots", ", ".join(e.snapshots)),
        ("Console", e.console_url),
    ]
    out = [f"{name}: {value}" for name, value in lines if value]
    if e.paths:
        shown = e.paths[:20]
        out.append("Files:")
        out.extend(f"  {p}" for p in shown)
        if len(e.paths) > len(shown):
            out.append(f"  ... and {len(e.paths) - len(shown)} more")
    return _clean("\n".join(out))


def summary(e):
    who = f" for user {e.user}" if e.user else ""
    text = f"[{e.severity_text.upper()}] Superna Zero Trust: {e.state or 'alert'}{who}"
    return truncate(_clean(text), 160)


def new_incident(e, cid):
    prio = PRIORITY.get(severity_name(e), "3")
    body = {
        "short_description": summary(e),
        "description": "Superna Zero Trust alert (delivered by ztbridge)\n\n" + details(e),
        "correlation_id": cid,
        "correlation_display": "Superna Zero Trust",
        "impact": prio,
        "urgency": prio,
        "category": config_get("category", "security"),
    }
    for name in ("assignment_group", "caller_id", "contact_type"):
        v = config_get(name)
        if v is not None:
            body[name] = v
    return body


class Transform:
    def describe(self):
        return Info(
            name="servicenow",
            version=VERSION,
            description="Superna Zero Trust alerts as ServiceNow incidents (Table API)",
            egress=[EgressRule_ConfigUrl("instance_url")],
            config=[
                key("instance_url", "The instance, e.g. https://acme.service-now.com", required=True),
                key("user", "Basic auth: the integration user (with `password`)", secret=True),
                key("password", "Basic auth: its password", secret=True),
                key("token", "OAuth bearer token (instead of user/password)", secret=True),
                key("category", "Incident category", default="security"),
                key("assignment_group", "Assignment group (sys_id or name) of new incidents"),
                key("caller_id", "Caller (sys_id or user name) of new incidents"),
                key("contact_type", "Contact type of new incidents, e.g. `monitoring`"),
                key("close_code", "Resolution code when Superna closes the alert", default="Solution provided"),
            ],
            needs_random=True,
        )

    def start(self, e):
        url = base_url()
        flow["url"] = url
        flow["auth"] = auth()
        flow["event"] = e
        flow["cid"] = correlation_id(e)
        flow["phase"] = "search"
        return send(get(
            url + TABLE,
            headers=[("Accept", "application/json")],
            query=[("sysparm_query", "correlation_id=" + flow["cid"] + "^ORDERBYDESCsys_created_on"),
                   ("sysparm_fields", FIELDS),
                   ("sysparm_limit", "1")],
            **flow["auth"],
        ))

    def resume(self, responses):
        phase = flow.get("phase")
        resp = single(responses)
        if phase == "search":
            return self.found(resp)
        if phase == "create":
            check(resp, "ServiceNow create incident")
            inc = _result(resp)
            return done(f"created incident {inc.get('number', '?')} (correlation_id {flow['cid']})")
        if phase in ("note", "resolve"):
            if resp.status == 404:
                # Deleted since the search: start afresh, or nothing to resolve.
                if phase == "resolve":
                    return done(f"incident {flow['number']} is gone (HTTP 404): nothing to resolve")
                log("warn", "incident deleted meanwhile: creating a new one", number=flow["number"])
                return self.create()
            what = "ServiceNow add work notes" if phase == "note" else "ServiceNow resolve incident"
            check(resp, what)
            if phase == "note":
                return done(f"added work notes to incident {flow['number']} (correlation_id {flow['cid']})")
            return done(f"resolved incident {flow['number']} (correlation_id {flow['cid']})")
        fail(permanent(f"resume called in an unknown phase {phase!r}"))

    def found(self, resp):
        if resp.status == 404:
            fail(permanent(
                f"ServiceNow search: HTTP 404 on {TABLE}: check `instance_url` (and that the "
                "Table API and the incident table are reachable): " + truncate(resp.body.strip(), 200)))
        check(resp, "ServiceNow search")
        try:
            found = json.loads(resp.body)["result"]
        except (ValueError, KeyError, TypeError):
            fail(permanent("ServiceNow search: the answer is not a Table API result: " + truncate(resp.body.strip(), 200)))
        if not isinstance(found, list):
            fail(permanent("ServiceNow search: `result` is not a list"))
        e = flow["event"]
        closed = e.state_kind.name == "CLOSED"
        if not found:
            if closed:
                return done(f"no incident with correlation_id {flow['cid']}: nothing to resolve")
            return self.create()
        inc = found[0] if isinstance(found[0], dict) else {}
        sys_id = str(inc.get("sys_id", ""))
        if not re.fullmatch(r"[0-9a-fA-F]{32}", sys_id):
            fail(permanent(f"ServiceNow search: the incident has no valid sys_id: {truncate(sys_id, 80)!r}"))
        flow["number"] = str(inc.get("number", sys_id))
        state = str(inc.get("state", ""))
        target = f"{flow['url']}{TABLE}/{sys_id}"
        if closed:
            if state in FINISHED:
                return done(f"incident {flow['number']} is already resolved (state {state})")
            flow["phase"] = "resolve"
            body = {
                "state": RESOLVED,
                "close_code": config_get("close_code", "Solution provided"),
                "close_notes": _clean(f"Superna Zero Trust closed the alert: {e.state or 'closed'} "
                                      f"({e.state_class})") + "\n\n" + details(e),
            }
        else:
            flow["phase"] = "note"
            body = {"work_notes": _clean(f"Superna Zero Trust update: {e.state or 'unknown state'} "
                                         f"({e.state_kind.name.lower()}, {e.state_class})") + "\n\n" + details(e)}
        return send(request("PATCH", target, headers=[("Accept", "application/json")],
                            json_body=body, **flow["auth"]))

    def create(self):
        flow["phase"] = "create"
        return send(request("POST", flow["url"] + TABLE, headers=[("Accept", "application/json")],
                            json_body=new_incident(flow["event"], flow["cid"]), **flow["auth"]))


def _result(resp):
    """The `result` object of a Table API answer ({} when unreadable)."""
    try:
        r = json.loads(resp.body).get("result")
    except (ValueError, AttributeError):
        return {}
    return r if isinstance(r, dict) else {}
