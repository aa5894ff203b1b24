#!/usr/bin/env bash
# CI for the Go SDK: formatting, vet, the tests (unit and, against a real server started
# from $BOTFRAMEWORK_BIN or botframework on PATH, integration), and the example builds.
set -euo pipefail
cd "$(dirname "$0")"

echo "== gofmt"
unformatted="$(gofmt -l .)"
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test (BOTFRAMEWORK_BIN=${BOTFRAMEWORK_BIN:-botframework on PATH})"
go test -count=1 ./...

echo "== build the example"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
go build -o "$out/chat" ./examples/chat

echo "== run the example: the spec's Go example as written, on a server it starts itself"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BOTFRAMEWORK_URL="http://127.0.0.1:$port" "$out/chat" -autostart > "$out/answer"
cat "$out/answer"
test -s "$out/answer"
echo "ok"
