// The JavaScript twin of transforms/testing/probe (Rust): reports the event
// record the host gave it, so a test can check that transforms in both
// languages see the same fields (contract 0.2: the host reads the event
// once).  Config key `field`: a path for `eventField`.

import { configGet, eventField } from 'ztbridge:transform/host@0.2.0';

const opt = (v) => (v === undefined ? null : v);

export const transform = {
  describe() {
    return {
      name: 'probe-js',
      version: '0.2.0',
      description: 'reports the event record (tests)',
      egress: [],
      config: [{ name: 'field', description: '', required: false, secret: false, defaultValue: undefined }],
      needsRandom: false,
    };
  },

  start(e) {
    const path = configGet('field') ?? 'extra.0.name';
    const out = {
      event_id: opt(e.eventId),
      alert_id: opt(e.alertId),
      severity: e.severity,
      severity_text: e.severityText,
      state: opt(e.state),
      state_kind: e.stateKind,
      state_class: e.stateClass,
      detected_at: opt(e.detectedAt),
      detected_text: opt(e.detectedText),
      updated_at: opt(e.updatedAt),
      updated_text: opt(e.updatedText),
      user: opt(e.user),
      paths: e.paths,
      shares: e.shares,
      client_ips: e.clientIps,
      policy: opt(e.policy),
      clusters: e.clusters,
      detectors: e.detectors,
      signal_strength: opt(e.signalStrength),
      event_source: opt(e.eventSource),
      console_url: opt(e.consoleUrl),
      protection_mode: opt(e.protectionMode),
      snapshots: e.snapshots,
      raw_length: new TextEncoder().encode(e.raw).length,
      field: opt(eventField(path)),
    };
    return { tag: 'done', val: JSON.stringify(out) };
  },

  resume(_responses) {
    return { tag: 'done', val: 'probe-js' };
  },
};
