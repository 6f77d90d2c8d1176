"use strict";
// The ledger API: liveness at /healthz, readiness at /readyz, build facts at
// /api/build, the auth check at /api/auth/status, metrics for the scraper only.

const http = require("http");
const { Client } = require("pg");

const port = Number(process.env.LISTEN_PORT || 3000);
const build = { version: process.env.LEDGER_VERSION, commit: process.env.LEDGER_COMMIT, time: process.env.LEDGER_BUILT };

async function databaseAnswers() {
  const client = new Client({ connectionString: process.env.DATABASE_URL, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query("SELECT count(*) FROM entries");
    return true;
  } catch (err) {
    return false;
  } finally {
    client.end().catch(() => {});
  }
}

function send(res, method, status, body, type = "application/json") {
  const text = type === "application/json" ? JSON.stringify(body) : body;
  res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(text) });
  res.end(method === "HEAD" ? undefined : text);
}

function scraperAllowed(header) {
  const expected = "Basic " + Buffer.from(`${process.env.METRICS_BASIC_AUTH_USER}:${process.env.METRICS_BASIC_AUTH_PASS}`).toString("base64");
  return Boolean(process.env.METRICS_BASIC_AUTH_USER) && header === expected;
}

let served = 0;
http.createServer(async (req, res) => {
  served += 1;
  const url = new URL(req.url, "http://ledger");
  const m = req.method;
  if (url.pathname === "/healthz" || url.pathname === "/api/ping") return send(res, m, 200, { ok: true });
  if (url.pathname === "/readyz") return (await databaseAnswers()) ? send(res, m, 200, { ok: true }) : send(res, m, 503, { ok: false });
  if (url.pathname === "/api/build") return send(res, m, 200, { build, env: process.env.NODE_ENV });
  if (url.pathname === "/api/auth/status") return send(res, m, (process.env.JWT_SECRET || "").length >= 32 ? 200 : 500, { ok: true });
  if (url.pathname === "/internal/metrics") {
    if (!scraperAllowed(req.headers.authorization)) return send(res, m, 401, "no\n", "text/plain");
    return send(res, m, 200, `# TYPE ledger_requests_total counter\nledger_requests_total ${served}\n`, "text/plain");
  }
  return send(res, m, 404, { error: "no such route" });
}).listen(port, () => console.log(`ledger ${build.version} on ${port}`));
process.on("SIGTERM", () => process.exit(0));
