// Closes retrying cannot fix, against the real binary: a refused token (the upgrade fails,
// and the client's probe learns 401) and a role taken over (4001) end the client with a
// fatal error; a token from the token function is fetched again for every connect.
// Before: no client; a bare WebSocket sees only 1006 for a refused upgrade.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { RelayClient } from "../../dist/index.js";
import { BIN, DRIVERS, startRelay } from "./harness.mjs";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const SECRET = "e2e-secret-0123456789abcdef0123456789";

function until(client, pred) {
  return new Promise((resolve) => {
    const errors = [];
    client.on("error", (e) => errors.push(e));
    client.on("state", (s) => pred(s) && resolve({ state: s, errors }));
  });
}

for (const driver of DRIVERS) {
  test(`a refused token and a replaced role end the client; a token function is asked at every connect (${driver})`, { skip: !BIN && "RINGRELAY_BIN not set", timeout: 30000 }, async () => {
    const relay = await startRelay({ driver, env: { RINGRELAY_AUTH_JWT_SECRET: SECRET } });
    const dir = mkdtempSync(join(tmpdir(), "rr-js-"));
    writeFileSync(join(dir, "secret"), SECRET);
    const mint = (session, role) =>
      execFileSync(BIN, ["token", "--secret-file", join(dir, "secret"), "--session", session, ...(role ? ["--role", role] : []), "--ttl", "1h"]).toString().trim();
    try {
      const bad = new RelayClient({ url: relay.url, session: "refused", token: "not-a-jwt", backoff: { initialMs: 5, maxMs: 20 } });
      const r = await until(bad, (s) => s === "closed");
      assert.equal(r.errors.length, 1, r.errors.map(String).join());
      assert.equal(r.errors[0].code, 401);
      assert.equal(r.errors[0].fatal, true);
      assert.match(r.errors[0].message, /malformed/);

      let asked = 0;
      const token = async () => {
        asked++;
        return mint("taken", "desktop");
      };
      const first = new RelayClient({ url: relay.url, session: "taken", role: "desktop", token });
      await until(first, (s) => s === "open");
      const ended = until(first, (s) => s === "closed");
      const second = new RelayClient({ url: relay.url, session: "taken", role: "desktop", token });
      await until(second, (s) => s === "open");
      const r2 = await ended;
      assert.equal(r2.errors[0].code, 4001);
      assert.equal(r2.errors[0].fatal, true);
      assert.equal(asked, 2);
      await second.close();
    } finally {
      await relay.stop();
    }
  });
}
