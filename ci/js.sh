#!/usr/bin/env bash
# Builds the JavaScript transform (transforms-js/webhook) from source with
# componentize-js, pinned by its committed package-lock.json.  Needs Node.js
# 20+ and npm.  Output: transforms-js/webhook/webhook.wasm.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null; then
    echo "ci/js.sh: npm not found: install Node.js 20 or newer (the JavaScript transform is built with componentize-js from npm)" >&2
    exit 1
fi
echo "== JavaScript transform: node $(node --version), npm $(npm --version)"
cd transforms-js/webhook
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
ls -l webhook.wasm
