// Builds sample-app offline (Debian's maven-repo via test/host/lein-offline-profile.clj),
// boots the standalone jar and checks endpoints plus every fault variant.
// Needs lein, java and Debian's Clojure libraries on this machine (.ci/run installs them).
import * as assert from "assert";
import { ChildProcess, execFileSync, spawn } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as http from "http";
import * as net from "net";
import * as path from "path";
import { commitAppVersion, makeAppRepo } from "./app-variants";
import { tempDir } from "../support/tmp";

const PROFILE = path.resolve(__dirname, "lein-offline-profile.clj");
const BUILD_TIMEOUT_MS = 300_000;
const BOOT_TIMEOUT_MS = 60_000;

// Every process we start, so after() can kill them by pid (process group).
const started = new Set<ChildProcess>();

function killTree(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, "SIGKILL"); // detached => own process group (lein forks a JVM)
  } catch {
    try {
      child.kill("SIGKILL");
    } catch {
      /* already gone */
    }
  }
}

function hasCommand(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

interface RunResult {
  code: number | null;
  output: string;
  ms: number;
}

function run(cmd: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }): Promise<RunResult> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    started.add(child);
    let output = "";
    child.stdout!.on("data", (d) => (output += d));
    child.stderr!.on("data", (d) => (output += d));
    const timer = setTimeout(() => killTree(child), opts.timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      started.delete(child);
      resolve({ code, output, ms: Date.now() - t0 });
    });
  });
}

function findStandaloneJar(dir: string): string | undefined {
  const target = path.join(dir, "target");
  if (!fs.existsSync(target)) return undefined;
  const hits = (fs.readdirSync(target, { recursive: true }) as string[]).filter((f) => f.endsWith("-standalone.jar"));
  return hits.length ? path.join(target, hits[0]) : undefined;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  ms: number;
}

function request(port: number, method: string, urlPath: string, body?: Buffer): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const req = http.request(
      { host: "127.0.0.1", port, method, path: urlPath, agent: false, headers: body ? { "content-type": "application/octet-stream" } : {} },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks), ms: Date.now() - t0 }));
        res.on("error", reject);
      },
    );
    req.setTimeout(70_000, () => req.destroy(new Error("request timeout")));
    req.on("error", reject);
    req.end(body);
  });
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => resolve(false));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface RunningApp {
  child: ChildProcess;
  port: number;
  log: () => string;
  exited: Promise<number | null>;
}

async function startJar(jar: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<RunningApp> {
  const port = await freePort();
  const child = spawn("java", ["-jar", jar], {
    env: { ...process.env, PORT: String(port), ...extraEnv },
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  started.add(child);
  let log = "";
  child.stdout!.on("data", (d) => (log += d));
  child.stderr!.on("data", (d) => (log += d));
  const exited = new Promise<number | null>((resolve) =>
    child.on("exit", (code) => {
      started.delete(child);
      resolve(code);
    }),
  );
  return { child, port, log: () => log, exited };
}

/** Resolves with ms until GET /health answered at all (any status), or throws. */
async function waitForAnswer(app: RunningApp, timeoutMs = BOOT_TIMEOUT_MS): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (app.child.exitCode !== null) throw new Error(`app exited (${app.child.exitCode}) before answering:\n${app.log()}`);
    try {
      await request(app.port, "GET", "/health");
      return Date.now() - t0;
    } catch {
      await sleep(50);
    }
  }
  throw new Error(`app did not answer within ${timeoutMs} ms:\n${app.log()}`);
}

async function stopApp(app: RunningApp): Promise<void> {
  killTree(app.child);
  await app.exited;
}

describe("sample-app (offline lein build on this host)", function () {
  let work: string;
  let leinEnv: NodeJS.ProcessEnv;

  /** makeAppRepo + `lein uberjar`; returns the build result and jar path. */
  async function build(name: string, opts: Parameters<typeof makeAppRepo>[1]) {
    const dir = path.join(work, name);
    const sha = makeAppRepo(dir, opts);
    const result = await run("lein", ["uberjar"], { cwd: dir, env: leinEnv, timeoutMs: BUILD_TIMEOUT_MS });
    return { dir, sha, result, jar: findStandaloneJar(dir) };
  }

  before(function () {
    for (const tool of ["lein", "java"]) assert.ok(hasCommand(tool), `${tool} is needed (.ci/run installs it)`);
    assert.ok(fs.existsSync("/usr/share/maven-repo"), "Debian's Clojure libraries are needed (.ci/run installs them)");
    work = tempDir("sample-app");
    // A throwaway HOME holding only the offline profile; ~/.m2 fills from file:///usr/share/maven-repo.
    const home = path.join(work, "home");
    fs.mkdirSync(path.join(home, ".lein"), { recursive: true });
    fs.copyFileSync(PROFILE, path.join(home, ".lein", "profiles.clj"));
    leinEnv = { ...process.env, HOME: home, LEIN_ROOT: "1", http_proxy: "", https_proxy: "" };
  });

  after(async function () {
    for (const child of [...started]) killTree(child);
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  describe("good build", function () {
    let jar: string;
    let app: RunningApp;
    let sha: string;

    before(async function () {
      const built = await build("good", { version: "7" });
      assert.strictEqual(built.result.code, 0, `lein uberjar failed:\n${built.result.output}`);
      assert.ok(built.jar, "no target/**/*-standalone.jar");
      jar = built.jar!;
      sha = built.sha;
      console.log(`      lein uberjar: ${built.result.ms} ms`);
      app = await startJar(jar, { APP_REVISION: built.sha });
      const bootMs = await waitForAnswer(app);
      console.log(`      boot to first /health answer: ${bootMs} ms`);
    });

    after(async function () {
      if (app) await stopApp(app);
    });

    it("logs the startup line with version and address", async function () {
      assert.match(app.log(), new RegExp(`sample-app 7 listening on 127\\.0\\.0\\.1:${app.port}`));
    });

    it("GET /health is 200 ok with version header and body", async function () {
      const r = await request(app.port, "GET", "/health");
      assert.strictEqual(r.status, 200);
      assert.strictEqual(r.headers["x-app-version"], "7");
      assert.match(r.body.toString(), /^ok version=7$/m);
    });

    it("GET / is 200 with version, and X-App-Revision from APP_REVISION", async function () {
      const r = await request(app.port, "GET", "/");
      assert.strictEqual(r.status, 200);
      assert.strictEqual(r.headers["x-app-version"], "7");
      assert.strictEqual(r.headers["x-app-revision"], sha);
      assert.match(r.body.toString(), /version=7/);
    });

    it("GET /slow?ms=N takes at least N ms; default is 300 ms", async function () {
      const r = await request(app.port, "GET", "/slow?ms=450");
      assert.strictEqual(r.status, 200);
      assert.strictEqual(r.headers["x-app-version"], "7");
      assert.ok(r.ms >= 450, `took ${r.ms} ms`);
      const d = await request(app.port, "GET", "/slow");
      assert.strictEqual(d.status, 200);
      assert.ok(d.ms >= 300, `default took ${d.ms} ms`);
      assert.strictEqual((await request(app.port, "GET", "/slow?ms=60001")).status, 400);
      assert.strictEqual((await request(app.port, "GET", "/slow?ms=abc")).status, 400);
    });

    it("POST /echo returns exactly the bytes sent (binary and form-looking bodies)", async function () {
      for (const body of [crypto.randomBytes(2048), Buffer.from("a=b&c=%zz"), Buffer.alloc(0), crypto.randomBytes(70_000)]) {
        const r = await request(app.port, "POST", "/echo", body);
        assert.strictEqual(r.status, 200);
        assert.strictEqual(r.headers["x-app-version"], "7");
        assert.ok(r.body.equals(body), `echo mismatch for ${body.length} bytes`);
      }
    });

    it("404s also carry the version header", async function () {
      const r = await request(app.port, "GET", "/nope");
      assert.strictEqual(r.status, 404);
      assert.strictEqual(r.headers["x-app-version"], "7");
    });

    it("honours HOST for the bind address", async function () {
      const other = await startJar(jar, { HOST: "127.0.0.2" });
      try {
        // 127.0.0.2 is loopback on Linux; the default 127.0.0.1 must stay closed.
        const t0 = Date.now();
        while (!/listening on 127\.0\.0\.2:/.test(other.log())) {
          if (Date.now() - t0 > BOOT_TIMEOUT_MS || other.child.exitCode !== null) assert.fail(other.log());
          await sleep(100);
        }
        assert.strictEqual(await portOpen(other.port), false);
      } finally {
        await stopApp(other);
      }
    });
  });

  describe("commitAppVersion", function () {
    it("adds a commit with the new VERSION and drops an earlier fault", function () {
      const dir = path.join(work, "versions");
      const first = makeAppRepo(dir, { version: "1", fault: "health-500" });
      const second = commitAppVersion(dir, { version: "2" });
      assert.notStrictEqual(first, second);
      const show = (rev: string, file: string) => execFileSync("git", ["show", `${rev}:${file}`], { cwd: dir, encoding: "utf8" });
      assert.strictEqual(show(first, "resources/VERSION"), "1\n");
      assert.strictEqual(show(second, "resources/VERSION"), "2\n");
      assert.match(show(first, "src/sample_app/core.clj"), /text 500/);
      assert.doesNotMatch(show(second, "src/sample_app/core.clj"), /text 500/);
      assert.strictEqual(execFileSync("git", ["status", "--porcelain"], { cwd: dir, encoding: "utf8" }), "");
    });
  });

  describe("fault variants", function () {
    it("health-500: /health answers 500, the rest still works", async function () {
      const built = await build("health-500", { version: "8", fault: "health-500" });
      assert.strictEqual(built.result.code, 0, built.result.output);
      const app = await startJar(built.jar!);
      try {
        await waitForAnswer(app);
        const h = await request(app.port, "GET", "/health");
        assert.strictEqual(h.status, 500);
        assert.strictEqual(h.headers["x-app-version"], "8");
        assert.strictEqual((await request(app.port, "GET", "/")).status, 200);
      } finally {
        await stopApp(app);
      }
    });

    it("exit-at-boot: exits non-zero without opening the port", async function () {
      const built = await build("exit-at-boot", { version: "9", fault: "exit-at-boot" });
      assert.strictEqual(built.result.code, 0, built.result.output);
      const app = await startJar(built.jar!);
      try {
        // Probe the port for as long as the JVM runs: after it exited a closed port proves nothing.
        let exitCode: number | null | undefined;
        void app.exited.then((c) => (exitCode = c));
        let opened = false;
        let probes = 0;
        const t0 = Date.now();
        while (exitCode === undefined && Date.now() - t0 < BOOT_TIMEOUT_MS) {
          if (await portOpen(app.port)) opened = true;
          probes++;
          await sleep(20);
        }
        assert.notStrictEqual(exitCode, undefined, `did not exit within ${BOOT_TIMEOUT_MS} ms:\n${app.log()}`);
        assert.notStrictEqual(exitCode, 0);
        assert.ok(probes > 0, "the port was probed while the app ran");
        assert.strictEqual(opened, false, `the port opened before the exit:\n${app.log()}`);
        assert.match(app.log(), /fault: exit-at-boot/);
        assert.doesNotMatch(app.log(), /listening on/, "no startup line");
      } finally {
        await stopApp(app);
      }
    });

    it("no-port: stays alive but never listens", async function () {
      const built = await build("no-port", { version: "10", fault: "no-port" });
      assert.strictEqual(built.result.code, 0, built.result.output);
      const app = await startJar(built.jar!);
      try {
        const t0 = Date.now();
        while (Date.now() - t0 < 6000) {
          assert.strictEqual(await portOpen(app.port), false, "port opened");
          await sleep(200);
        }
        assert.strictEqual(app.child.exitCode, null, `exited early:\n${app.log()}`);
        assert.match(app.log(), /fault: no-port/);
      } finally {
        await stopApp(app);
      }
    });

    it("compile-error: lein uberjar fails and leaves no standalone jar", async function () {
      const built = await build("compile-error", { version: "11", fault: "compile-error" });
      assert.notStrictEqual(built.result.code, 0, "lein uberjar unexpectedly succeeded");
      assert.strictEqual(built.jar, undefined);
      assert.match(built.result.output, /EOF while reading|Syntax error|Compiling/);
    });
  });
});
