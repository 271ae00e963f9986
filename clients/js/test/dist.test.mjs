// The demo page embeds the built client (src/demo/page/ringrelay-client.js), committed so that
// `cargo build` works without Node. `npm test` builds first; this checks the fresh build is
// the committed copy. After changing src/index.ts: `npm run build:demo` and commit both.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

test("a fresh build matches the copy the demo embeds", () => {
  const built = readFileSync(new URL("../dist/index.js", import.meta.url), "utf8");
  const embedded = readFileSync(new URL("../../../src/demo/page/ringrelay-client.js", import.meta.url), "utf8");
  assert.ok(built === embedded, "src/demo/page/ringrelay-client.js is stale: run `npm run build:demo` in clients/js and commit it");
});
