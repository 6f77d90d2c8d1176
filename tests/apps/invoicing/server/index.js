"use strict";
// The invoicing API, everything under /api (the client's nginx proxies /api to it):
// liveness, readiness, build metadata, the auth check, and metrics for the scraper.

const http = require("http");
const { Client } = require("pg");

const port = Number(process.env.PORT || 5000);
const metadata = {
  version: process.env.APP_VERSION,
  gitSha: process.env.GIT_SHA,
  buildDate: process.env.BUILD_TIME,
  environment: process.env.NODE_ENV,
};

async function databaseAnswers() {
  const client = new Client({ connectionString: process.env.DATABASE_URL, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query("SELECT count(*) FROM customers");
    return true;
  } catch (err) {
    return false;
  } finally {
    client.end().catch(() => {});
  }
}

function reply(res, method, status, body, type = "application/json") {
  const text = type === "application/json" ? JSON.stringify(body) : body;
  res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(text) });
  res.end(method === "HEAD" ? undefined : text);
}

function scraper(header) {
  const user = process.env.METRICS_BASIC_AUTH_USER;
  const expected = "Basic " + Buffer.from(`${user}:${process.env.METRICS_BASIC_AUTH_PASS}`).toString("base64");
  return Boolean(user) && header === expected;
}

let requests = 0;
const server = http.createServer(async (req, res) => {
  requests += 1;
  const path = new URL(req.url, "http://invoicing").pathname;
  const m = req.method;
  switch (path) {
    case "/api/health":
      return reply(res, m, 200, { success: true });
    case "/api/ready":
      return (await databaseAnswers()) ? reply(res, m, 200, { success: true }) : reply(res, m, 503, { success: false });
    case "/api/version":
      return reply(res, m, 200, { success: true, metadata });
    case "/api/auth/status":
      return reply(res, m, (process.env.JWT_SECRET || "").length >= 32 ? 200 : 500, { success: true });
    case "/api/metrics":
      if (!scraper(req.headers.authorization)) return reply(res, m, 401, "unauthorized\n", "text/plain");
      return reply(res, m, 200, `# TYPE invoicing_requests_total counter\ninvoicing_requests_total ${requests}\n`, "text/plain");
    default:
      return reply(res, m, 404, { success: false, error: "not found" });
  }
});
server.listen(port, () => console.log(`invoicing ${metadata.version} listening on ${port}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
