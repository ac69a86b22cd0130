#!/usr/bin/env bash
# Builds the library entry points (outbox-relay/writer, outbox-relay/consumer) and the command
# line (dist/cli/main.js, what bin/outbox-relay runs in an installed copy) as JavaScript plus
# .d.ts: Node strips types only outside node_modules, so an installed package must ship JS.
#
#   build-lib.sh [OUT_DIR]     # default: dist/
#
# tsc compiles src/writer.ts, src/consumer.ts, src/cli/main.ts and what they import; rewriteRelativeImportExtensions
# turns the `./x.ts` specifiers into `./x.js`. The result is then imported by plain Node as a smoke test.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(realpath -m "${1:-$ROOT/dist}")
CONFIG_DIR=$ROOT/.cache/build-lib
readonly ROOT OUT CONFIG_DIR

mkdir -p "$CONFIG_DIR"
# The config lives inside the repository so that `types: ["node"]` resolves from its node_modules.
cat >"$CONFIG_DIR/tsconfig.json" <<JSON
{
  "extends": "../../tsconfig.json",
  "compilerOptions": {
    "noEmit": false,
    "declaration": true,
    "declarationMap": true,
    "sourceMap": true,
    "rewriteRelativeImportExtensions": true,
    "rootDir": "../../src",
    "outDir": "$OUT"
  },
  "include": [],
  "files": ["../../src/writer.ts", "../../src/consumer.ts", "../../src/cli/main.ts"]
}
JSON

rm -rf "$OUT"
cd "$ROOT"
npx tsc -p "$CONFIG_DIR/tsconfig.json"
# Every relative import must now name a .js file that exists, or Node fails at import time.
# (Only inside the repository, where the dependencies resolve from its node_modules.)
[[ $OUT == "$ROOT"/* ]] && npx node --input-type=module -e "
  const writer = await import('$OUT/writer.js')
  const consumer = await import('$OUT/consumer.js')
  for (const [name, m, expected] of [['writer', writer, 'writeEvent'], ['consumer', consumer, 'makeIdempotentConsumer']]) {
    if (typeof m[expected] !== 'function') throw new Error(name + ' entry point lacks ' + expected)
  }
"
[[ $OUT == "$ROOT"/* ]] && npx node "$OUT/cli/main.js" --help >/dev/null
printf 'build-lib: %s files in %s\n' "$(find "$OUT" -name '*.js' | wc -l)" "$OUT" >&2
