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

import { log, configGet, eventField } from 'ztbridge:transform/host@0.2.0';

const VERSION = '0.2.0';
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
// The event: the host reads the webhook once (contract 0.2) and hands every
// transform the same record, whatever its language; fields it does not name
// come from `eventField('a.b')`.

const LABELS = { critical: '[CRITICAL]', major: '[MAJOR]', warning: '[WARNING]' };

// Shows at most `max` items of a list, saying how many were left out.
function bounded(list, max) {
  if (list.length <= max) return list.join(', ');
  return `${list.slice(0, max).join(', ')} (+${list.length - max} more)`;
}

function severityName(input) {
  if (input.severity !== 'other') return input.severity;
  const t = input.severityText.toLowerCase().replace(/[^a-z0-9]/g, '');
  return input.severityText === 'Unknown' || t === '' ? 'unknown' : t;
}

function model(input) {
  const severity = severityName(input);
  const files = input.paths;
  return {
    id: input.eventId ?? 'unknown',
    severity,
    severity_label: LABELS[severity] ?? `[${severity.toUpperCase()}]`,
    state: input.state ?? 'unknown state',
    state_kind: input.stateClass,
    user: input.user ?? 'unknown',
    cluster: input.clusters.join(', ') || 'unknown cluster',
    clients: bounded(input.clientIps, 10) || 'none',
    shares: bounded(input.shares, 10) || 'none',
    files: bounded(files, 10) || 'none',
    file_count: String(files.length),
    detectors: bounded(input.detectors, 10),
    detected: input.detectedAt ?? input.detectedText ?? '',
    console_url: input.consoleUrl ?? '',
    receipt_id: input.receiptId,
    received_at: input.receivedAt,
    attempt: String(input.attempt),
  };
}

// {{name}} and {{event.a.b}} substitution; the result is plain text (JSON
// escaping happens when the body is serialised).
function render(template, fields) {
  return template.replace(/\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}/g, (_, name) => {
    if (name.startsWith('event.')) return eventField(name.slice(6)) ?? '';
    return fields[name] ?? '';
  });
}

// Renders every string of a JSON template (keys stay as written).
function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function renderJson(value, fields) {
  if (typeof value === 'string') return render(value, fields);
  if (Array.isArray(value)) return value.map((v) => renderJson(v, fields));
  if (isObject(value)) {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = renderJson(v, fields);
    return out;
  }
  return value;
}

const COLOURS = { critical: 'attention', major: 'warning', warning: 'accent' };

function body(format, message, fields) {
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
      egress: [{ tag: 'config-url', val: 'url' }],
      needsRandom: false,
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
    const fields = model(input);
    const message = render(config('message', DEFAULT_MESSAGE), fields).trim();
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
      payload = renderJson(parsed, fields);
    } else {
      payload = body(format, message, fields);
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
    const result = responses[0];
    if (result.tag === 'err') {
      // No response: DNS, connect, TLS, timeout may pass later; the host's
      // own refusals (egress-denied, too-large) will not.
      const { tag, val } = result.val;
      if (tag === 'egress-denied' || tag === 'too-large') throw permanent(`webhook not sent (${tag}): ${val}`);
      throw retryable(`webhook unreachable (${tag}): ${val}`);
    }
    const r = result.val;
    const excerpt = r.body.length > 300 ? `${r.body.slice(0, 300)}...` : r.body;
    if (r.status >= 200 && r.status < 300) {
      return { tag: 'done', val: `webhook accepted the message (HTTP ${r.status})` };
    }
    if (r.status === 429 || r.status >= 500) {
      const header = r.headers.find((h) => h.name.toLowerCase() === 'retry-after');
      const seconds = header && /^\d+$/.test(header.value.trim()) ? Number(header.value.trim()) : undefined;
      throw retryable(`webhook answered HTTP ${r.status} (will retry): ${excerpt}`, seconds);
    }
    throw permanent(`webhook refused the message (HTTP ${r.status}, not retried): ${excerpt}`);
  },
};
