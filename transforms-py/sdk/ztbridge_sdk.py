"""ztbridge guest SDK for Python transforms (componentize-py).

The Python twin of the Rust SDK's conveniences (transforms/sdk): thin
wrappers over the host imports of contract ztbridge:transform@0.2.0
(wit/ztbridge.wit), request builders, and failures classified the way every
destination wants (2xx ok; 408/425/429 and 5xx retryable with Retry-After;
401/403 and everything else permanent).

componentize-py generates the bindings (package `wit_world`) at build time;
this module only imports them.  A transform module defines a class
`Transform` with `describe`, `start(event)` and `resume(responses)`;
`start`/`resume` return a step (`send(...)` or `done(...)`) and raise
`Err(failure)` (a `Failure` raised with `fail(...)`) for the error case.
"""

import base64
import json
import urllib.parse

from componentize_py_types import Err, Ok
from wit_world.imports import host
from wit_world.imports.types import (
    ConfigKey,
    EgressRule_ConfigUrl,
    EgressRule_Host,
    EgressRule_Wildcard,
    Failure,
    Header,
    HttpRequest,
    HttpResponse,
    Info,
    LogLevel,
    Severity,
    StateKind,
    Step_Done,
    Step_Send,
    TransportError_Connect,
    TransportError_Dns,
    TransportError_EgressDenied,
    TransportError_Timeout,
    TransportError_Tls,
    TransportError_TooLarge,
)

__all__ = [
    "ConfigKey", "EgressRule_ConfigUrl", "EgressRule_Host", "EgressRule_Wildcard",
    "Err", "Failure", "Header", "HttpRequest", "HttpResponse", "Info", "LogLevel",
    "Ok", "Severity", "StateKind", "key", "config_get", "config_require", "config_flag",
    "state_get", "state_set", "state_delete", "event_field", "log", "request", "get",
    "post", "send", "done", "permanent", "config_error", "retryable", "transport",
    "retry_after", "check", "single", "fail", "truncate", "severity_name", "state_kind_name",
]


# ---------------------------------------------------------------- config

def key(name, description, required=False, secret=False, default=None):
    """One config key for `Info.config`."""
    return ConfigKey(name=name, description=description, required=required,
                     secret=secret, default_value=default)


def config_get(name, default=None):
    """The route's value for `name` (or the key's declared default)."""
    v = host.config_get(name)
    return default if v is None or v == "" else v


def config_require(name):
    """The value of a required key; a permanent configuration failure when unset."""
    v = config_get(name)
    if v is None:
        fail(config_error(f"config key `{name}` is not set"))
    return v


def config_flag(name, default=False):
    """A boolean key: true/yes/1/on (any case) is true."""
    v = config_get(name)
    if v is None:
        return default
    return v.strip().lower() in ("true", "yes", "1", "on")


# ---------------------------------------------------------------- host

def state_get(k):
    return host.state_get(k)


def state_set(k, v):
    host.state_set(k, v)


def state_delete(k):
    host.state_delete(k)


def event_field(path):
    """A field of the event the record does not name ("details.rule.name")."""
    return host.event_field(path)


_LEVELS = {"trace": LogLevel.TRACE, "debug": LogLevel.DEBUG, "info": LogLevel.INFO,
           "warn": LogLevel.WARN, "error": LogLevel.ERROR}


def log(level, message, **fields):
    """`log("info", "created", number="INC0010001")`: never log secrets."""
    from wit_world.imports.types import Field
    host.log(_LEVELS[level], message, [Field(key=k, value=str(v)) for k, v in fields.items()])


# ---------------------------------------------------------------- event

def severity_name(event):
    """`critical`, `major`, `warning`, or the severity as written, lower-cased."""
    if event.severity == Severity.OTHER:
        return event.severity_text.lower()
    return event.severity.name.lower()


def state_kind_name(event):
    """`open`, `update` or `closed`."""
    return event.state_kind.name.lower()


# ---------------------------------------------------------------- requests

def request(method, url, headers=None, body="", query=None, json_body=None,
            bearer=None, basic=None):
    """An `HttpRequest`.  `query`: dict or list of pairs appended to the URL;
    `json_body`: serialised with a JSON content type; `bearer`: a token;
    `basic`: (user, password)."""
    hs = [Header(name=n, value=v) for n, v in (headers or [])]
    if query:
        pairs = query.items() if isinstance(query, dict) else query
        sep = "&" if "?" in url else "?"
        url = url + sep + urllib.parse.urlencode(list(pairs), quote_via=urllib.parse.quote)
    if json_body is not None:
        body = json.dumps(json_body, ensure_ascii=False, separators=(",", ":"))
        hs.append(Header(name="Content-Type", value="application/json"))
    if bearer is not None:
        hs.append(Header(name="Authorization", value=f"Bearer {bearer}"))
    if basic is not None:
        token = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        hs.append(Header(name="Authorization", value=f"Basic {token}"))
    return HttpRequest(method=method, url=url, headers=hs, body=body)


def get(url, **kw):
    return request("GET", url, **kw)


def post(url, **kw):
    return request("POST", url, **kw)


def send(*requests):
    """The step "send these requests, then call resume"."""
    return Step_Send(list(requests))


def done(outcome):
    """The step "finished", with a short outcome for the operator."""
    return Step_Done(outcome)


# ---------------------------------------------------------------- failures

def truncate(text, limit):
    """At most `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[:limit] + "…"


def permanent(message):
    """A failure retrying cannot fix."""
    return Failure(retryable=False, message=truncate(message, 1000), retry_after_seconds=None)


def config_error(message):
    """A configuration problem an administrator must fix (never retried)."""
    return permanent(f"configuration error: {message}")


def retryable(message, retry_after_seconds=None):
    """A failure that may pass later."""
    return Failure(retryable=True, message=truncate(message, 1000),
                   retry_after_seconds=retry_after_seconds)


def fail(failure):
    """Ends the call with `failure` (the `err` of `result<step, failure>`)."""
    raise Err(failure)


def transport(error):
    """A request that got no response: network failures may pass later; the
    host's own refusals (egress, too large) will not."""
    m = error.value
    if isinstance(error, TransportError_Dns):
        return retryable(f"DNS lookup failed: {m}")
    if isinstance(error, TransportError_Connect):
        return retryable(f"connection failed: {m}")
    if isinstance(error, TransportError_Tls):
        return retryable(f"TLS failed: {m}")
    if isinstance(error, TransportError_Timeout):
        return retryable(f"timed out: {m}")
    if isinstance(error, TransportError_TooLarge):
        return permanent(f"response too large: {m}")
    if isinstance(error, TransportError_EgressDenied):
        return permanent(f"egress denied: {m}")
    return retryable(f"no response: {m}")


def header(resp, name):
    """A response header's value (case-insensitive), None when absent."""
    name = name.lower()
    for h in resp.headers:
        if h.name.lower() == name:
            return h.value
    return None


def retry_after(resp):
    """`Retry-After` in seconds (the HTTP-date form is ignored: the host then
    uses its own back-off)."""
    v = header(resp, "retry-after")
    if v is None:
        return None
    v = v.strip()
    if v.isdigit() and int(v) < 2**32:
        return int(v)
    return None


def check(resp, what):
    """Classifies a response: returns for 2xx, else fails the call.  `what`
    names the call for the message ("ServiceNow create")."""
    excerpt = truncate(resp.body.strip(), 300)
    s = resp.status
    if 200 <= s <= 299:
        return
    if s in (401, 403):
        fail(permanent(f"{what}: HTTP {s} (authentication or permission refused; check the credentials, not retried): {excerpt}"))
    if s in (408, 425, 429):
        fail(retryable(f"{what}: HTTP {s} (rate limited or too early): {excerpt}", retry_after(resp)))
    if 500 <= s <= 599:
        fail(retryable(f"{what}: HTTP {s}: {excerpt}", retry_after(resp)))
    fail(permanent(f"{what}: HTTP {s} (rejected, not retried): {excerpt}"))


def single(responses):
    """The one response of a one-request step (fails the call on a transport error)."""
    if len(responses) != 1:
        fail(permanent(f"expected 1 response, got {len(responses)}"))
    r = responses[0]
    if isinstance(r, Err):
        fail(transport(r.value))
    return r.value
