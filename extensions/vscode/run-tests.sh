#!/usr/bin/env bash
# CI for the VS Code extension (extensions/vscode): a clean install from package-lock.json,
# Debian's Chromium when it is missing (for the webview test), then `npm test` (type-check;
# unit tests; integration and webview tests against real servers started from
# $BOTFRAMEWORK_BIN, else `botframework` on PATH: without either they fail, they are never
# skipped), and the .vsix built by `vsce package`.
set -euo pipefail
cd "$(dirname "$0")"

echo "== node $(node --version), npm $(npm --version)"

if [ -z "${CHROMIUM_BIN:-}" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  echo "== apt-get install chromium (for the webview test)"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo"
    else
      echo "Chromium is missing, and installing it needs root or sudo: apt-get install -y chromium (or set CHROMIUM_BIN)" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q chromium >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; }
fi

echo "== npm ci"
npm ci --no-audit --no-fund

echo "== npm test (BOTFRAMEWORK_BIN=${BOTFRAMEWORK_BIN:-botframework on PATH})"
npm test

echo "== vsce package"
rm -f ./*.vsix
npm run package
ls -l ./*.vsix
