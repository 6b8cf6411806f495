// ztbridge transform, in JavaScript: Superna Zero Trust events to a generic
// JSON webhook (Slack or Microsoft Teams incoming webhooks, or any JSON body
// you describe with a template).
//
// Built into a WebAssembly component with componentize-js (`npm run build`);
// the contract is ../../wit/ztbridge.wit.  See docs/writing-transforms.md.
//
// Config keys (see `describe` below):
//   url       the webhook URL (secret: Slack and Teams URLs are credentials)
//   format    slack | teams | json
//   message   text template, e.g. "{{severity}} {{state}} for {{user}}"
//   template  JSON body template for format=json; every string in it is a
//             text template
//   authorization  optional Authorization header value (secret)
//
// Templates: {{name}} is replaced by a field of the event model below
// (id, severity, severity_label, state, state_kind, user, cluster, clients,
// shares, files, file_count, detectors, detected, console_url, receipt_id,
// received_at, attempt), or {{event.a.b}} by a raw field of the webhook
// body.  Unknown names become an empty string.

import { log, configGet } from 'ztbridge:transform/host@0.1.0';

const VERSION = '0.1.0';
const DEFAULT_MESSAGE =
  '{{severity_label}} Superna Zero Trust event {{id}}: {{state}} for user {{user}} on {{cluster}}. ' +
  'Files: {{files}}. Clients: {{clients}}. {{console_url}}';

// ---------------------------------------------------------------------------
// Failures: `throw` a failure record and the host sees `Err(failure)`.

function permanent(message) {
  return { retryable: false, message, retryAfterSeconds: undefined };
}

function retryable(message, retryAfterSeconds) {
  return { retryable: true, message, retryAfterSeconds };
}

// ---------------------------------------------------------------------------
// The tolerant Superna event model: field names vary between versions and
// integrations (`id`, `eventId`, `EventID`...), events may be wrapped in
// `{"event": {...}}`, and values may be strings, numbers, lists or objects.

const normalize = (k) => String(k).toLowerCase().replace(/[^a-z0-9]/g, '');

const KEYS = {
  id: ['eventid', 'id', 'alertid', 'incidentid', 'zerotrusteventid', 'ransomwareeventid', 'eventuuid', 'uuid'],
  severity: ['severity', 'eventseverity', 'severitylevel', 'level', 'priority'],
  state: ['state', 'eventstate', 'status', 'eventstatus', 'lockoutstate', 'action'],
  user: ['user', 'username', 'useraccount', 'account', 'accountname', 'actor', 'userid', 'nfsclient'],
  clients: ['clientips', 'clientip', 'clientipaddresses', 'clientaddresses', 'ipaddresses', 'ips', 'ip', 'sourceip', 'clients'],
  shares: ['shares', 'share', 'smbshares', 'affectedshares', 'sharenames', 'sharename'],
  files: ['files', 'file', 'filepaths', 'filenames', 'affectedfiles', 'paths', 'path', 'objects'],
  cluster: ['nes', 'ne', 'cluster', 'clustername', 'clusters', 'nascluster', 'nasname', 'nas'],
  detectors: ['threatdetectors', 'detectors', 'detector', 'signals', 'signal', 'threats'],
  detected: ['detected', 'detectedat', 'detectiontime', 'detectedtime', 'timestamp', 'time', 'eventtime', 'created', 'createdat'],
  console_url: ['url', 'consoleurl', 'eventurl', 'link', 'href', 'uri', 'eyeglassurl', 'detailsurl'],
};
const WRAPPERS = ['event', 'data', 'alert', 'payload', 'zerotrustevent', 'details'];

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// The objects fields are looked up in: the body, then any wrapper object.
function scopes(raw) {
  if (!isObject(raw)) return [];
  const out = [raw];
  for (const [k, v] of Object.entries(raw)) {
    if (WRAPPERS.includes(normalize(k)) && isObject(v)) out.push(v);
  }
  return out;
}

// Normalised key -> value, per scope, built once per event (normalising
// every key for every lookup costs more than the rest of the transform).
function index(raw) {
  return scopes(raw).map((scope) => {
    const m = new Map();
    for (const [k, v] of Object.entries(scope)) {
      const n = normalize(k);
      if (!m.has(n) && v !== null && v !== undefined && v !== '') m.set(n, v);
    }
    return m;
  });
}

function lookup(idx, names) {
  for (const name of names) {
    for (const m of idx) {
      if (m.has(name)) return m.get(name);
    }
  }
  return undefined;
}

// Any JSON value as a list of short strings.
function texts(v) {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return v.flatMap(texts);
  if (isObject(v)) {
    for (const k of ['name', 'value', 'ip', 'path', 'id']) {
      if (k in v && !isObject(v[k])) return texts(v[k]);
    }
    return [JSON.stringify(v)];
  }
  return [String(v)];
}

function text(v) {
  return texts(v).join(', ');
}

function severityName(v) {
  const s = normalize(text(v));
  if (s.startsWith('crit')) return 'critical';
  if (s.startsWith('maj')) return 'major';
  if (s.startsWith('warn')) return 'warning';
  return s === '' ? 'unknown' : s;
}

function stateKind(v) {
  const s = normalize(text(v));
  if (s.includes('falsepositive')) return 'false_positive';
  if (s.includes('recover') || s.includes('archiv')) return 'recovered';
  if (s.includes('restor') || s.includes('unlock')) return 'access_restored';
  if (s.includes('delayed')) return 'delayed_lockout';
  if (s.includes('lock')) return 'lockout';
  return 'other';
}

const LABELS = { critical: '[CRITICAL]', major: '[MAJOR]', warning: '[WARNING]' };

// Shows at most `max` items of a list, saying how many were left out.
function bounded(list, max) {
  if (list.length <= max) return list.join(', ');
  return `${list.slice(0, max).join(', ')} (+${list.length - max} more)`;
}

function model(body, input) {
  const raw = index(body);
  const severity = severityName(lookup(raw, KEYS.severity));
  const files = texts(lookup(raw, KEYS.files));
  return {
    id: text(lookup(raw, KEYS.id)) || 'unknown',
    severity,
    severity_label: LABELS[severity] ?? `[${severity.toUpperCase()}]`,
    state: text(lookup(raw, KEYS.state)) || 'unknown state',
    state_kind: stateKind(lookup(raw, KEYS.state)),
    user: text(lookup(raw, KEYS.user)) || 'unknown',
    cluster: text(lookup(raw, KEYS.cluster)) || 'unknown cluster',
    clients: bounded(texts(lookup(raw, KEYS.clients)), 10) || 'none',
    shares: bounded(texts(lookup(raw, KEYS.shares)), 10) || 'none',
    files: bounded(files, 10) || 'none',
    file_count: String(files.length),
    detectors: bounded(texts(lookup(raw, KEYS.detectors)), 10),
    detected: text(lookup(raw, KEYS.detected)),
    console_url: texts(lookup(raw, KEYS.console_url)).find((u) => /^https?:\/\//.test(u)) ?? '',
    receipt_id: input.receiptId,
    received_at: input.receivedAt,
    attempt: String(input.attempt),
  };
}

// {{name}} and {{event.a.b}} substitution; the result is plain text (JSON
// escaping happens when the body is serialised).
function render(template, fields, raw) {
  return template.replace(/\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}/g, (_, name) => {
    if (name.startsWith('event.')) {
      let v = raw;
      for (const part of name.slice(6).split('.')) {
        v = v !== null && typeof v === 'object' ? v[part] : undefined;
      }
      return v === undefined ? '' : text(v);
    }
    return fields[name] ?? '';
  });
}

// Renders every string of a JSON template (keys stay as written).
function renderJson(value, fields, raw) {
  if (typeof value === 'string') return render(value, fields, raw);
  if (Array.isArray(value)) return value.map((v) => renderJson(v, fields, raw));
  if (isObject(value)) {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = renderJson(v, fields, raw);
    return out;
  }
  return value;
}

const COLOURS = { critical: 'attention', major: 'warning', warning: 'accent' };

function body(format, message, fields, raw) {
  switch (format) {
    case 'slack':
      // Slack incoming webhooks: https://api.slack.com/messaging/webhooks
      return { text: message };
    case 'teams':
      // Teams (Workflows or connector) incoming webhooks: an Adaptive Card.
      return {
        type: 'message',
        attachments: [
          {
            contentType: 'application/vnd.microsoft.card.adaptive',
            contentUrl: null,
            content: {
              $schema: 'http://adaptivecards.io/schemas/adaptive-card.json',
              type: 'AdaptiveCard',
              version: '1.4',
              body: [
                {
                  type: 'TextBlock',
                  size: 'Medium',
                  weight: 'Bolder',
                  color: COLOURS[fields.severity] ?? 'default',
                  text: `${fields.severity_label} Superna Zero Trust: ${fields.state}`,
                  wrap: true,
                },
                { type: 'TextBlock', text: message, wrap: true },
              ],
              actions: fields.console_url
                ? [{ type: 'Action.OpenUrl', title: 'Open in Superna Eyeglass', url: fields.console_url }]
                : [],
            },
          },
        ],
      };
    default:
      throw permanent(`config key \`format\`: unknown format \`${format}\` (slack, teams or json)`);
  }
}

// ---------------------------------------------------------------------------
// The exported interface: ztbridge:transform/transform.

function config(key, fallback) {
  const v = configGet(key);
  return v === undefined || v === null || v.trim() === '' ? fallback : v;
}

export const transform = {
  describe() {
    return {
      name: 'webhook-js',
      version: VERSION,
      description: 'Superna Zero Trust events to a JSON webhook (Slack, Microsoft Teams or a template), in JavaScript',
      egress: ['config:url'],
      config: [
        { name: 'url', description: 'Webhook URL (https)', required: true, secret: true, defaultValue: undefined },
        { name: 'format', description: 'slack, teams or json (the body is `template`)', required: false, secret: false, defaultValue: 'slack' },
        { name: 'message', description: 'Message text template ({{id}}, {{severity}}, {{state}}, {{user}}, {{files}}, {{event.FIELD}}...)', required: false, secret: false, defaultValue: DEFAULT_MESSAGE },
        { name: 'template', description: 'For format=json: the JSON body; every string in it is a template, {{message}} is the rendered message', required: false, secret: false, defaultValue: undefined },
        { name: 'authorization', description: 'Authorization header value, if the webhook needs one', required: false, secret: true, defaultValue: undefined },
      ],
    };
  },

  start(input) {
    const url = config('url');
    if (url === undefined) throw permanent('config key `url` is not set');
    let raw;
    try {
      raw = JSON.parse(input.body);
    } catch (e) {
      throw permanent(`event is not JSON: ${e}`);
    }
    const fields = model(raw, input);
    const message = render(config('message', DEFAULT_MESSAGE), fields, raw).trim();
    fields.message = message;
    const format = config('format', 'slack').trim().toLowerCase();
    let payload;
    if (format === 'json') {
      const template = config('template');
      if (template === undefined) throw permanent('format=json needs the config key `template`');
      let parsed;
      try {
        parsed = JSON.parse(template);
      } catch (e) {
        throw permanent(`config key \`template\` is not JSON: ${e}`);
      }
      payload = renderJson(parsed, fields, raw);
    } else {
      payload = body(format, message, fields, raw);
    }
    if (fields.id === 'unknown') log('warn', 'event has no recognisable event ID', []);
    const headers = [{ name: 'Content-Type', value: 'application/json' }];
    const auth = config('authorization');
    if (auth !== undefined) headers.push({ name: 'Authorization', value: auth });
    return {
      tag: 'send',
      val: [{ method: 'POST', url, headers, body: JSON.stringify(payload) }],
    };
  },

  resume(responses) {
    if (responses.length !== 1) throw permanent(`expected one response, got ${responses.length}`);
    const r = responses[0];
    const excerpt = r.body.length > 300 ? `${r.body.slice(0, 300)}...` : r.body;
    if (r.status >= 200 && r.status < 300) {
      return { tag: 'done', val: `webhook accepted the message (HTTP ${r.status})` };
    }
    if (r.status === 0) throw retryable(`webhook unreachable: ${excerpt}`);
    if (r.status === 429 || r.status >= 500) {
      const header = r.headers.find((h) => h.name.toLowerCase() === 'retry-after');
      const seconds = header && /^\d+$/.test(header.value.trim()) ? Number(header.value.trim()) : undefined;
      throw retryable(`webhook answered HTTP ${r.status} (will retry): ${excerpt}`, seconds);
    }
    throw permanent(`webhook refused the message (HTTP ${r.status}, not retried): ${excerpt}`);
  },
};
