#!/usr/bin/env bash
# Builds the JavaScript transform (transforms-js/webhook) from source with
# componentize-js, at the versions pinned by package.json (exact) and the
# committed package-lock.json.  Needs Node.js
# 20+ and npm.  Output: transforms-js/webhook/webhook.wasm.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null; then
    echo "ci/js.sh: npm not found: install Node.js 20 or newer (the JavaScript transform is built with componentize-js from npm)" >&2
    exit 1
fi
echo "== JavaScript transform: node $(node --version), npm $(npm --version)"
cd transforms-js/webhook
# `npm ci` refuses this lock file: it lists other platforms' optional
# native packages (rolldown, jco-node-fs bindings) that the registry mirror
# these machines use does not carry, so npm could not record them.  `npm
# install` with the committed lock installs the same pinned versions and
# skips unavailable optional packages; --no-save leaves the lock untouched.
npm install --no-audit --no-fund --no-save --prefer-offline --loglevel=error
npm run --silent build
ls -l webhook.wasm
# The JavaScript twin of the Rust probe (the cross-language agreement test),
# built with the same componentize-js.
cd ../probe
npm run --silent build
ls -l probe.wasm
