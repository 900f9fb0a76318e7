// A server for the host suites: a fresh test host, the Pulumi program pointed
// at it (provider: existing), and the harness that runs the program's remote
// commands on it over SSH with Pulumi-like state.
import * as assert from "assert";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as http from "http";
import * as path from "path";
import { DEFAULTS } from "../../infra/config";
import { EnvironmentLayout, layout } from "../../infra/names";
import { LoadReport, startLoad } from "../load/client";
import { apply, ApplyResult, collect, RemoteResource } from "./harness";
import { startTestHost, TestHost } from "./testhost";
import { tempDir } from "../support/tmp";

/** Debian's Clojure libraries, copied into the test host as a local Maven mirror (a server would use Clojars). */
const MAVEN_MIRROR = "/var/cache/czd-test-maven-repo";
const LEIN_PROFILE = path.join(__dirname, "lein-offline-profile.clj");

/** Where the setup puts the sample app's environment on a test host (the paths the suites read). */
export function sampleAppLayout(environment = "live"): EnvironmentLayout {
    return layout(DEFAULTS.appName, environment, {
        proxy: DEFAULTS.proxyPort, slot1: DEFAULTS.slot1Port, slot2: DEFAULTS.slot2Port, nrepl1: DEFAULTS.nrepl1Port, nrepl2: DEFAULTS.nrepl2Port,
    });
}

export function log(line: string): void {
    console.log(`      ${line}`);
}

/** Runs `fn` and logs how long it took: the host suites say what they are doing. */
export async function step<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const t0 = Date.now();
    log(`[step] ${what} ...`);
    try {
        const result = await fn();
        log(`[step] ${what}: done (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
        return result;
    } catch (e) {
        log(`[step] ${what}: FAILED (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
        throw e;
    }
}

export interface Server {
    host: TestHost;
    /** The program's config for this server; tests may change it between applies. */
    config: Record<string, string>;
    statePath: string;
    /** Collects the program with `config` (plus overrides) and applies it. */
    up(overrides?: Record<string, string>, opts?: { throwOnError?: boolean }): Promise<ApplyResult>;
    resources(overrides?: Record<string, string>): Promise<RemoteResource[]>;
    /** Runs a command on the server as `user` (root by default) and returns stdout; throws on failure. */
    sh(command: string, user?: string, input?: string): Promise<string>;
    stop(): Promise<void>;
}

export interface ServerOptions {
    name: string;
    index?: number;
    /** Path of the app's git repository (appPath). */
    appPath: string;
    config?: Record<string, string>;
}

export async function startServer(opts: ServerOptions): Promise<Server> {
    const host = await step(`start test host ${opts.name}`, () => startTestHost({ name: opts.name, index: opts.index, log }));
    try {
        await step("seed the offline Maven mirror and Leiningen profile", async () => {
            // The deploy user gets the profile from /etc/skel when the setup creates it.
            const mirror = path.join(host.rootDir, MAVEN_MIRROR.slice(1));
            execFileSync("cp", ["-rL", "/usr/share/maven-repo", mirror]);
            const profile = fs.readFileSync(LEIN_PROFILE, "utf8").split("file:///usr/share/maven-repo").join(`file://${MAVEN_MIRROR}`);
            const skel = path.join(host.rootDir, "etc/skel/.lein");
            fs.mkdirSync(skel, { recursive: true });
            fs.writeFileSync(path.join(skel, "profiles.clj"), profile);
        });
        const publicKey = execFileSync("ssh-keygen", ["-y", "-f", host.privateKeyPath], { encoding: "utf8" }).trim();
        const stateDir = tempDir(`state-${opts.name}`);
        const config: Record<string, string> = {
            provider: "existing",
            host: host.address,
            sshUser: "root",
            sshPublicKey: publicKey,
            sshPrivateKey: host.privateKey,
            appPath: opts.appPath,
            ...opts.config,
        };
        const server: Server = {
            host,
            config,
            statePath: path.join(stateDir, "state.json"),
            resources: (overrides = {}) => collect({
                config: { ...config, ...overrides },
                secretKeys: ["sshPrivateKey", "appEnv", "tlsKey"],
                stack: config.environment ?? "live",
            }),
            async up(overrides = {}, applyOpts = {}) {
                const resources = await server.resources(overrides);
                return apply(resources, { statePath: server.statePath, log, throwOnError: applyOpts.throwOnError ?? true });
            },
            async sh(command, user = "root", input) {
                const r = await host.ssh(command, { user, input, allowFail: true, timeoutMs: 300_000 });
                if (r.code !== 0) throw new Error(`on the server as ${user}: ${command}\nexit ${r.code}\n${r.stderr}${r.stdout}`);
                return r.stdout;
            },
            async stop() {
                await host.stop();
                fs.rmSync(stateDir, { recursive: true, force: true });
            },
        };
        return server;
    } catch (e) {
        await host.stop();
        throw e;
    }
}

export interface HttpAnswer {
    status: number;
    /** X-App-Version and X-App-Revision of the answer ("" when absent). */
    version: string;
    revision: string;
    body: string;
}

/** One GET through the server's nginx on port 80, on a fresh connection, with the site's Host header. */
export function httpGet(address: string, host: string, urlPath = "/"): Promise<HttpAnswer> {
    return new Promise((resolve, reject) => {
        const req = http.get({ host: address, port: 80, path: urlPath, headers: { Host: host }, agent: false }, res => {
            let body = "";
            res.setEncoding("utf8").on("data", d => (body += d)).on("end", () => resolve({
                status: res.statusCode!,
                version: String(res.headers["x-app-version"] ?? ""),
                revision: String(res.headers["x-app-revision"] ?? ""),
                body,
            }));
        });
        req.on("error", reject);
    });
}

/**
 * What the server logged about failed requests, for a failed test's message: the end of
 * nginx's error logs (why it answered 502: refused, reset, timed out) and of Supervisor's log
 * (which slot started, stopped or exited when).
 */
export async function serverLogs(server: Server): Promise<string> {
    return server.sh(`set +e; for f in /var/log/nginx/*error.log /var/log/supervisor/supervisord.log; do
        echo "---- last lines of $f ----"; tail -n 25 "$f"; done`, "root").catch(e => `(server logs not readable: ${e.message})`);
}

/**
 * Runs `fn` while 32 keep-alive clients load the site (a second of load before and after),
 * and fails on any failed request: any non-200, any transport error, any wrong echo.
 */
export async function underLoad<T>(server: Server, host: string, what: string, fn: () => Promise<T>): Promise<{ result: T; report: LoadReport }> {
    const load = startLoad({ url: `http://${server.host.address}`, hostHeader: host, concurrency: 32 });
    await new Promise(r => setTimeout(r, 1000));
    let result: T;
    try {
        result = await fn();
        await new Promise(r => setTimeout(r, 1000));
    } catch (e) {
        await load.stop();
        throw e;
    }
    const report = await load.stop();
    assert.ok(report.totals.requests > 100, `${what}: the load ran (${report.totals.requests} requests)`);
    if (report.totals.failed > 0) {
        const detail = JSON.stringify({ failures: report.failures, statusCodes: report.statusCodes, transportErrors: report.transportErrors, samples: report.failureSamples.slice(0, 5) });
        const first = new Date(Math.min(...report.failureSamples.map(f => f.at))).toISOString();
        assert.fail(`${what}: ${report.totals.failed} of ${report.totals.requests} requests failed (the first at ${first}): ${detail}\n${await serverLogs(server)}`);
    }
    log(`${what}: ${report.totals.requests} requests, 0 failed, fast GET p99 ${report.latency.get.p99} ms`);
    return { result, report };
}
