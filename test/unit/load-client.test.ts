// The load client against an in-process server that misbehaves on purpose
// and counts its own misdeeds: the client's failure counts must match exactly.
import * as assert from "assert";
import * as http from "http";
import { AddressInfo } from "net";
import { LoadReport, now, runLoad, startLoad } from "../load/client";

interface Misbehaviour {
  /** Every Nth GET / answers 502. */
  every502?: number;
  /** Every Nth GET /slow has its socket destroyed instead of an answer. */
  everyDestroy?: number;
  /** Every Nth POST /echo gets a body with one byte flipped. */
  everyCorrupt?: number;
}

class TestServer {
  version = "A";
  handled = 0;
  sent502 = 0;
  destroyed = 0;
  corrupted = 0;
  hostHeaders = new Set<string>();
  private gets = 0;
  private slows = 0;
  private posts = 0;
  private server!: http.Server;
  url = "";

  constructor(private readonly misbehave: Misbehaviour = {}) {}

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.keepAliveTimeout = 60_000; // no idle closes mid-test: only our sabotage counts
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.handled++;
    this.hostHeaders.add(req.headers.host ?? "");
    const headers = { "x-app-version": this.version, "content-type": "text/plain" };
    const url = new URL(req.url ?? "/", "http://x");
    if (req.method === "GET" && url.pathname === "/") {
      const n = ++this.gets;
      if (this.misbehave.every502 && n % this.misbehave.every502 === 0) {
        this.sent502++;
        res.writeHead(502, headers).end("bad gateway");
        return;
      }
      res.writeHead(200, headers).end(`hello version=${this.version}`);
    } else if (req.method === "GET" && url.pathname === "/slow") {
      const n = ++this.slows;
      const ms = Number(url.searchParams.get("ms") ?? 300);
      setTimeout(() => {
        if (this.misbehave.everyDestroy && n % this.misbehave.everyDestroy === 0) {
          this.destroyed++;
          req.socket.destroy();
          return;
        }
        res.writeHead(200, headers).end("slept");
      }, ms);
    } else if (req.method === "POST" && url.pathname === "/echo") {
      const n = ++this.posts;
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks);
        if (this.misbehave.everyCorrupt && n % this.misbehave.everyCorrupt === 0 && body.length > 0) {
          this.corrupted++;
          body[body.length >> 1] ^= 0xff;
        }
        res.writeHead(200, { ...headers, "content-type": "application/octet-stream" }).end(body);
      });
    } else {
      res.writeHead(404, headers).end();
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function assertTimelineConsistent(report: LoadReport): void {
  const requests = report.timeline.reduce((a, b) => a + b.requests, 0);
  const failures = report.timeline.reduce((a, b) => a + b.failures, 0);
  assert.strictEqual(requests, report.totals.requests);
  assert.strictEqual(failures, report.totals.failed);
}

describe("load client", function () {
  this.timeout(20_000);
  let server: TestServer;

  afterEach(async function () {
    if (server) await server.stop();
  });

  it("a clean server yields zero failures and exercises every request kind", async function () {
    server = new TestServer();
    await server.start();
    const report = await runLoad({ url: server.url, hostHeader: "app.test", concurrency: 8, durationMs: 1200, slowMs: 30 });
    assert.deepStrictEqual(report.failures, { status: 0, transport: 0, echo: 0 });
    assert.strictEqual(report.totals.failed, 0);
    assert.strictEqual(report.totals.requests, server.handled);
    assert.ok(report.latency.get.count > 0 && report.latency.slow.count > 0 && report.latency.post.count > 0);
    assert.ok(report.latency.slow.p50 >= 30, `slow p50 ${report.latency.slow.p50}`);
    assert.deepStrictEqual([...report.versionsAfter(0)], ["A"]);
    assert.deepStrictEqual([...server.hostHeaders], ["app.test"]);
    assertTimelineConsistent(report);
    // The JSON form is plain data (what the CLI prints).
    const json = JSON.parse(JSON.stringify(report));
    assert.strictEqual(json.totals.requests, report.totals.requests);
  });

  it("counts exactly the 502s, destroyed sockets and corrupted echoes the server produced", async function () {
    server = new TestServer({ every502: 7, everyDestroy: 3, everyCorrupt: 5 });
    await server.start();
    const report = await runLoad({ url: server.url, concurrency: 6, durationMs: 1500, slowMs: 10 });
    assert.ok(server.sent502 > 0 && server.destroyed > 0 && server.corrupted > 0, "sabotage did not happen; run longer");
    assert.strictEqual(report.failures.status, server.sent502);
    assert.deepStrictEqual(report.statusCodes, { "502": server.sent502 });
    assert.strictEqual(report.failures.transport, server.destroyed);
    assert.strictEqual(report.failures.echo, server.corrupted);
    assert.strictEqual(report.totals.failed, server.sent502 + server.destroyed + server.corrupted);
    // Nothing retried, nothing lost: one server-side request per client record.
    assert.strictEqual(report.totals.requests, server.handled);
    assert.deepStrictEqual(Object.keys(report.transportErrors), ["ECONNRESET"]);
    const failed = report.records().filter((r) => !r.ok);
    assert.strictEqual(failed.filter((r) => r.kind === "slow").length, server.destroyed);
    assert.ok(failed.filter((r) => r.failure === "status").every((r) => r.status === 502 && r.version === "A"));
    assertTimelineConsistent(report);
  });

  it("versionsAfter(t) only sees the new version after a switch; stop() ends the load", async function () {
    server = new TestServer();
    await server.start();
    const load = startLoad({ url: server.url, concurrency: 4, slowMs: 20 });
    await sleep(400);
    // The client's clock, not Date.now(): the two can differ by a millisecond.
    const switchedAt = now();
    server.version = "B";
    await sleep(400);
    const report = await load.stop();
    assert.strictEqual(report.totals.failed, 0);
    assert.deepStrictEqual([...report.versionsAfter(switchedAt)], ["B"]);
    assert.deepStrictEqual([...report.versionsAfter(0)].sort(), ["A", "B"]);
    assert.ok(report.versions.A > 0 && report.versions.B > 0);
    assert.ok(report.recordsAfter(switchedAt).every((r) => r.version === "B"));
    const handledAtStop = server.handled;
    await sleep(100);
    assert.strictEqual(server.handled, handledAtStop, "requests continued after stop()");
  });

  it("stops on an AbortSignal or a settled promise", async function () {
    server = new TestServer();
    await server.start();
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    const t0 = Date.now();
    const a = await runLoad({ url: server.url, concurrency: 2, stopSignal: ac.signal, slowMs: 10 });
    assert.ok(a.totals.requests > 0 && Date.now() - t0 < 2000);
    const b = await runLoad({ url: server.url, concurrency: 2, stopSignal: sleep(200), slowMs: 10 });
    assert.ok(b.totals.requests > 0);
  });

  it("counts timeouts and refused connections as transport failures", async function () {
    server = new TestServer();
    await server.start();
    const slow = await runLoad({
      url: server.url,
      concurrency: 2,
      durationMs: 250,
      mix: { get: 0, slowGet: 1, post: 0 },
      slowMs: 1000,
      requestTimeoutMs: 100,
    });
    assert.ok(slow.totals.requests >= 2);
    assert.deepStrictEqual(slow.transportErrors, { TIMEOUT: slow.totals.requests });
    const url = server.url;
    await server.stop();
    server = undefined as unknown as TestServer;
    const refused = await runLoad({ url, concurrency: 2, durationMs: 100 });
    assert.ok(refused.totals.requests > 0);
    assert.strictEqual(refused.failures.transport, refused.totals.requests);
    assert.deepStrictEqual(Object.keys(refused.transportErrors), ["ECONNREFUSED"]);
  });
});
