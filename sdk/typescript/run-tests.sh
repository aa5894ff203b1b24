#!/usr/bin/env bash
# CI for the TypeScript SDK: a clean install from package-lock.json, then `npm test`: the
# package and the tests compiled by tsc (strict), unit tests (fake fetch) and integration
# tests against real servers started from $BOTFRAMEWORK_BIN, else `botframework` on PATH
# (without either the integration tests fail; they are never skipped).
set -euo pipefail
cd "$(dirname "$0")"

echo "== node $(node --version), npm $(npm --version)"
echo "== npm ci"
npm ci --no-audit --no-fund

echo "== npm test (BOTFRAMEWORK_BIN=${BOTFRAMEWORK_BIN:-botframework on PATH})"
npm test
