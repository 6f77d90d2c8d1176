"use strict";
// Stand-in SmartAccounting backend: the endpoints the runbook checks, one that reads
// the database (/api/accounts), and faults baked in on purpose (standin-faults).

const crypto = require("crypto");
const fs = require("fs");
const http = require("http");
const { Pool } = require("pg");

const env = process.env;
const PORT = Number(env.PORT || 8080);
const BUILD_TIME = env.BUILD_TIME || "unknown";
const ENVIRONMENT = env.NODE_ENV || "development";
const faults = readFaults("/app/standin-faults");
const VERSION = faults["report-version"] ? faults["report-version"][0] : env.APP_VERSION || "0.0.0";
const GIT_SHA = faults["report-sha"] ? faults["report-sha"][0] : env.GIT_SHA || "unknown";
const flaky = faults.flaky ? { [faults.flaky[0]]: Number(faults.flaky[1]) } : {};
const counts = {};

function readFaults(path) {
  const found = {};
  let text = "";
  try {
    text = fs.readFileSync(path, "utf8");
  } catch (e) {
    return found;
  }
  for (const line of text.split("\n")) {
    const words = line.split("#", 1)[0].trim().split(/\s+/).filter(Boolean);
    if (words.length) found[words[0]] = words.slice(1);
  }
  return found;
}

const pool = new Pool({ connectionString: env.DATABASE_URL, max: 4, connectionTimeoutMillis: 3000 });
pool.on("error", () => {}); // a dropped idle connection is not fatal: the next query reconnects

function sameSecret(given, expected) {
  const a = Buffer.from(given), b = Buffer.from(expected);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

function metricsAuthorized(header) {
  if (!header || !header.startsWith("Basic ")) return false;
  const decoded = Buffer.from(header.slice(6), "base64").toString();
  const at = decoded.indexOf(":");
  if (at < 0) return false;
  const user = env.METRICS_BASIC_AUTH_USER || "", pass = env.METRICS_BASIC_AUTH_PASS || "";
  return Boolean(user && pass) && sameSecret(decoded.slice(0, at), user) && sameSecret(decoded.slice(at + 1), pass);
}

function metrics() {
  const lines = [
    "# HELP smartaccounting_http_requests_total Requests served, by path.",
    "# TYPE smartaccounting_http_requests_total counter",
    ...Object.keys(counts).sort().map((p) => `smartaccounting_http_requests_total{path="${p}"} ${counts[p]}`),
    "# HELP smartaccounting_build_info Build metadata.",
    "# TYPE smartaccounting_build_info gauge",
    `smartaccounting_build_info{version="${VERSION}",git_sha="${GIT_SHA}"} 1`,
  ];
  return lines.join("\n") + "\n";
}

async function answer(path, headers) {
  counts[path] = (counts[path] || 0) + 1;
  if (counts[path] <= (flaky[path] || 0)) return [503, { status: "flaky on purpose" }];
  switch (path) {
    case "/health":
      return faults["health-fails"] ? [500, { status: "broken on purpose" }] : [200, { status: "ok" }];
    case "/api/health":
      return [200, { status: "ok" }];
    case "/ready":
      try {
        await pool.query("SELECT 1");
        return [200, { status: "ready" }];
      } catch (e) {
        return [503, { status: "database unavailable" }];
      }
    case "/api/system/version":
      return [200, { version: VERSION, gitSha: GIT_SHA, buildTime: BUILD_TIME, environment: ENVIRONMENT }];
    case "/api/auth/health":
      return (env.JWT_SECRET || "").length >= 32 ? [200, { status: "ok" }] : [503, { status: "JWT secret not configured" }];
    case "/api/accounts":
      try {
        const { rows } = await pool.query("SELECT count(*)::int AS count FROM accounts");
        return [200, { count: rows[0].count }];
      } catch (e) {
        return [503, { status: "database unavailable" }];
      }
    case "/metrics":
      if (!faults["open-metrics"] && !metricsAuthorized(headers.authorization)) {
        return [401, "unauthorized\n", { "WWW-Authenticate": 'Basic realm="metrics"' }];
      }
      return [200, metrics(), { "Content-Type": "text/plain; version=0.0.4" }];
    default:
      return [404, { error: "not found" }];
  }
}

// POST /api/accounts {"name": ...} creates an account: a request that writes, which
// no edge may send twice (the load generator checks each 201 left its row).
async function create(req) {
  let text = "";
  for await (const chunk of req) text += chunk;
  let name;
  try {
    name = JSON.parse(text).name;
  } catch (e) {
    return [400, { error: "a JSON body is expected" }];
  }
  if (typeof name !== "string" || !name) return [400, { error: "name is required" }];
  try {
    const { rows } = await pool.query("INSERT INTO accounts (name) VALUES ($1) RETURNING id", [name]);
    return [201, { id: rows[0].id }];
  } catch (e) {
    return [503, { status: "database unavailable" }];
  }
}

const server = http.createServer(async (req, res) => {
  const path = req.url.split("?", 1)[0];
  const writes = req.method === "POST" && path === "/api/accounts";
  if (req.method !== "GET" && req.method !== "HEAD" && !writes) {
    res.writeHead(405, { Allow: "GET, HEAD" }).end();
    return;
  }
  const [status, body, extra] = writes ? await create(req) : await answer(path, req.headers);
  const text = typeof body === "string" ? body : JSON.stringify(body);
  res.writeHead(status, {
    "Content-Type": typeof body === "string" ? "text/plain" : "application/json",
    "Content-Length": Buffer.byteLength(text),
    ...(extra || {}),
  });
  res.end(req.method === "HEAD" ? undefined : text); // HEAD: the runbook's `curl -I`
  process.stderr.write(`${req.method} ${path} -> ${status}\n`);
});

if (faults["crash-on-start"]) {
  console.error("fatal: cannot start (crash-on-start fault)");
  process.exit(1);
}
// slow-start: listen late, as an app busy with its start-up work does (its health check fails meanwhile).
const startDelayMs = faults["slow-start"] ? Number(faults["slow-start"][0]) * 1000 : 0;
if (startDelayMs) console.log(`starting in ${startDelayMs / 1000} s (slow-start fault)`);
setTimeout(() => server.listen(PORT, "0.0.0.0",
  () => console.log(`smartaccounting stand-in ${VERSION} (${GIT_SHA}) listening on :${PORT}`)), startDelayMs);
// SIGTERM: the listener closes at once (new connections are refused) and the requests
// in flight finish. SHUTDOWN_DELAY_S, as some teams add: the process stays that long
// before it exits, so that an edge still holding its address from DNS is refused
// (and tries another) instead of waiting on an address that has gone.
const shutdownDelayMs = Number(env.SHUTDOWN_DELAY_S || 0) * 1000;
process.on("SIGTERM", () => {
  const exitAt = Date.now() + shutdownDelayMs;
  server.close(() => setTimeout(() => pool.end().finally(() => process.exit(0)), Math.max(0, exitAt - Date.now())));
  setTimeout(() => process.exit(0), 5000 + shutdownDelayMs).unref();
});
