// `npm run bench -- [--deploys N] [--methods a,b] [--out path] [--concurrency 32]`
//
// Brings up one test host with the sample app (version 1 and version 2, built
// once each), then, for each method, puts load on it with the strict load
// client and times the method's deploys and its rollback. Writes the JSON, a
// Markdown table and an SVG picture; reports, asserts nothing.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { DEFAULTS } from "../infra/config";
import { commitAppVersion, makeAppRepo } from "../test/host/app-variants";
import { log, Server, startServer, step } from "../test/host/fixture";
import { startLoad } from "../test/load/client";
import { APP, BENCH_SCRIPT, benchScript, DEFAULT_METHODS, DOMAIN, ENV, LAYOUT, METHODS, parseBenchOutput, phasesOf, WARMUP_PATH, WARMUP_REQUESTS, warmupRequestsOf } from "./methods";
import {
    BenchResult, BuildTime, DeployRun, markdownReport, METHOD_NAMES, MethodName, MethodResult, renderSvg, round1, summarizeMethod,
} from "./report";

export interface BenchOptions {
    deploys: number;
    methods: MethodName[];
    /** Path of the JSON; the .md and .svg go next to it with the same base name. */
    out: string;
    concurrency: number;
    /** Load before the steady window, not measured (JIT warm-up, connections). */
    warmupSeconds: number;
    steadySeconds: number;
    /** Load between two deploys (and before the rollback). */
    gapSeconds: number;
    hostName: string;
    hostIndex: number;
    /** The sample app's `javaOpts` (empty: the JVM's defaults, like the config's default). */
    javaOpts: string;
}

export const DEFAULT_OPTIONS: BenchOptions = {
    deploys: 10,
    methods: DEFAULT_METHODS,
    out: path.resolve(__dirname, "results", "latest.json"),
    concurrency: 32,
    // Long enough for the JIT of the live JVM to settle: the steady state is a warm JVM.
    warmupSeconds: 20,
    // 20 s: the p99 of a 10 s window (about 4000 fast GETs) varied from 1.7 to 4.1 ms between methods of one run.
    steadySeconds: 20,
    gapSeconds: 2,
    hostName: "bench",
    hostIndex: 60,
    javaOpts: DEFAULTS.javaOpts,
};

const sleep = (ms: number) => new Promise<void>(r => setTimeout(r, ms));

export function parseArgs(argv: string[]): BenchOptions {
    const opts: BenchOptions = { ...DEFAULT_OPTIONS };
    const num = (name: string, v: string | undefined, min: number): number => {
        const n = Number(v);
        if (v === undefined || !Number.isFinite(n) || n < min) throw new Error(`--${name} needs a number >= ${min}, got ${v}`);
        return n;
    };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const v = argv[i + 1];
        switch (a) {
            case "--deploys": opts.deploys = Math.floor(num("deploys", v, 1)); i++; break;
            case "--concurrency": opts.concurrency = Math.floor(num("concurrency", v, 1)); i++; break;
            case "--steady": opts.steadySeconds = num("steady", v, 1); i++; break;
            case "--warmup": opts.warmupSeconds = num("warmup", v, 0); i++; break;
            case "--gap": opts.gapSeconds = num("gap", v, 0); i++; break;
            case "--host-index": opts.hostIndex = Math.floor(num("host-index", v, 1)); i++; break;
            case "--host-name": if (!v) throw new Error("--host-name needs a value"); opts.hostName = v; i++; break;
            case "--out": if (!v) throw new Error("--out needs a path"); opts.out = path.resolve(v); i++; break;
            // the program's config validation checks them (at the harness's pulumi up)
            case "--java-opts": if (v === undefined) throw new Error("--java-opts needs the JVM options, in one argument"); opts.javaOpts = v; i++; break;
            case "--methods": {
                if (!v) throw new Error("--methods needs a list");
                const names = v.split(",").map(s => s.trim()).filter(Boolean);
                for (const n of names) {
                    if (!(METHOD_NAMES as readonly string[]).includes(n)) throw new Error(`unknown method ${n} (known: ${METHOD_NAMES.join(", ")})`);
                }
                opts.methods = names as MethodName[];
                i++;
                break;
            }
            case "-h": case "--help":
                console.log("usage: npm run bench -- [--deploys N] [--methods a,b] [--out path] [--concurrency 32] [--steady 20] [--warmup 20] [--gap 2] [--java-opts '<JVM options>'] [--host-name bench] [--host-index 60]");
                console.log("       npm run bench -- --render results.json   (rewrite the .md and .svg from a JSON)");
                console.log(`methods: ${METHOD_NAMES.join(", ")} (default: ${DEFAULT_METHODS.join(",")})`);
                process.exit(0);
                break;
            default: throw new Error(`unknown argument ${a}`);
        }
    }
    return opts;
}

async function historyLine(server: Server): Promise<string[]> {
    const out = await server.sh(`tail -n 1 ${LAYOUT.historyFile}`);
    return out.trim().split("\t");
}

async function machineInfo(server: Server): Promise<Record<string, string | number>> {
    const q = async (cmd: string) => (await server.host.ssh(cmd, { allowFail: true })).stdout.trim();
    const pkg = (name: string) => q(`dpkg-query -W -f='\${Version}' ${name} 2>/dev/null`);
    return {
        nginx: (await q("nginx -v 2>&1")).replace(/^nginx version: /, ""),
        supervisor: await q("supervisord -v"),
        java: (await q("java -version 2>&1 | head -n 1")),
        javaPackage: await pkg("default-jre-headless"),
        leiningen: await pkg("leiningen"),
        cpus: Number(await q("nproc")) || os.cpus().length,
        cpuModel: os.cpus()[0]?.model ?? "unknown",
        memoryGiB: round1(os.totalmem() / 2 ** 30),
        kernel: await q("uname -r"),
        os: await q(". /etc/os-release && echo $PRETTY_NAME"),
    };
}

interface Revisions {
    revs: [string, string];
    versions: [string, string];
}

async function timedCall(server: Server, sub: "deploy" | "rollback", method: MethodName, rev: string, version: string, kind: DeployRun["kind"]): Promise<DeployRun> {
    const t0 = Date.now();
    const r = await server.host.ssh(`${BENCH_SCRIPT} ${sub} ${method} ${rev}`, { allowFail: true, timeoutMs: 300_000 });
    const t1 = Date.now();
    const parsed = parseBenchOutput(r.stdout);
    const run: DeployRun = {
        kind,
        revision: rev,
        version,
        startMs: parsed.startUs !== undefined ? parsed.startUs / 1000 : t0,
        endMs: parsed.endUs !== undefined ? parsed.endUs / 1000 : t1,
        phases: phasesOf(parsed),
        ok: r.code === 0,
    };
    const warmup = warmupRequestsOf(parsed);
    if (warmup !== undefined) run.warmupRequests = warmup;
    if (r.code !== 0) run.error = `exit ${r.code}: ${(r.stderr.trim() || r.stdout.trim()).split("\n").slice(-3).join(" | ")}`;
    return run;
}

async function runMethod(server: Server, method: MethodName, opts: BenchOptions, rv: Revisions): Promise<MethodResult> {
    const spec = METHODS[method];
    const [rev1, rev2] = rv.revs;
    const versionOf = (rev: string) => (rev === rev1 ? rv.versions[0] : rv.versions[1]);
    await step(`${method}: prepare (version ${rv.versions[0]} live)`, async () => {
        await server.sh(`${BENCH_SCRIPT} prepare ${method} ${rev1}`);
        await server.sh(`for i in $(seq 50); do curl -fsS -o /dev/null -H 'Host: ${spec.host}' http://127.0.0.1/ && exit 0; sleep 0.2; done; exit 1`);
    });
    const load = startLoad({ url: `http://${server.host.address}/`, hostHeader: spec.host, concurrency: opts.concurrency });
    const deploys: DeployRun[] = [];
    let rollback: DeployRun | undefined;
    try {
        await sleep(opts.warmupSeconds * 1000);
        const steadyFrom = Date.now();
        await sleep(opts.steadySeconds * 1000);
        const steadyTo = Date.now();
        let current = rev1;
        for (let i = 0; i < opts.deploys; i++) {
            const next = current === rev1 ? rev2 : rev1;
            const run = await timedCall(server, "deploy", method, next, versionOf(next), "deploy");
            deploys.push(run);
            log(`${method}: deploy ${i + 1}/${opts.deploys} to version ${versionOf(next)}: ${run.ok ? "ok" : `FAILED (${run.error})`} in ${((run.endMs - run.startMs) / 1000).toFixed(1)}s ` +
                `(boot ${run.phases.boot} gate ${run.phases.gate} warm-up ${run.phases.warmup} ramp ${run.phases.ramp} switch ${run.phases.switch} drain ${run.phases.drain} stop ${run.phases.stop}), ${load.completed()} requests so far`);
            if (run.ok) current = next;
            await sleep(opts.gapSeconds * 1000);
        }
        const back = current === rev1 ? rev2 : rev1;
        rollback = await timedCall(server, "rollback", method, back, versionOf(back), "rollback");
        log(`${method}: rollback to version ${versionOf(back)}: ${rollback.ok ? "ok" : `FAILED (${rollback.error})`} in ${((rollback.endMs - rollback.startMs) / 1000).toFixed(1)}s`);
        await sleep(opts.gapSeconds * 1000);
        const report = await load.stop();
        const result = summarizeMethod({
            name: method,
            note: spec.description,
            records: report.records(),
            loadStartMs: report.startedAt,
            loadEndMs: report.endedAt,
            steady: [steadyFrom, steadyTo],
            deploys,
            rollback,
        });
        log(`${method}: ${result.requests} requests, ${result.failed} failed (${JSON.stringify(result.failures)}), fast GET p99 ${result.fastGet.steadyP99Ms} -> ${result.fastGet.deployP99Ms} ms, ` +
            `rollback ${result.rollbackSeconds}s${report.failureSamples.length ? `; first failure: ${report.failureSamples[0].detail}` : ""}`);
        return result;
    } finally {
        await load.stop();
    }
}

export interface BenchOutput {
    result: BenchResult;
    jsonPath: string;
    markdownPath: string;
    svgPath: string;
}

export function writeOutputs(result: BenchResult, jsonPath: string): BenchOutput {
    fs.mkdirSync(path.dirname(jsonPath), { recursive: true });
    const base = jsonPath.replace(/\.json$/, "");
    const markdownPath = `${base}.md`;
    const svgPath = `${base}.svg`;
    fs.writeFileSync(jsonPath, JSON.stringify(result, null, 2) + "\n");
    fs.writeFileSync(svgPath, renderSvg(result));
    fs.writeFileSync(markdownPath, markdownReport(result, path.basename(svgPath)));
    return { result, jsonPath, markdownPath, svgPath };
}

export async function runBenchmark(opts: BenchOptions): Promise<BenchOutput> {
    const t0 = Date.now();
    const work = fs.mkdtempSync(path.join(os.tmpdir(), "czd-bench-"));
    let server: Server | undefined;
    const onSignal = () => {
        log("interrupted: stopping the test host");
        const s = server;
        (s ? s.stop() : Promise.resolve()).finally(() => process.exit(130));
    };
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    try {
        const appPath = path.join(work, "app");
        const rev1 = makeAppRepo(appPath, { version: "1" });
        const rev2 = commitAppVersion(appPath, { version: "2" });
        const rv: Revisions = { revs: [rev1, rev2], versions: ["1", "2"] };
        server = await startServer({ name: opts.hostName, index: opts.hostIndex, appPath, config: { domain: DOMAIN, environment: ENV, appName: APP, warmupPath: WARMUP_PATH, warmupRequests: String(WARMUP_REQUESTS), ...(opts.javaOpts ? { javaOpts: opts.javaOpts } : {}) } });
        const s = server;
        const builds: BuildTime[] = [];
        await step("pulumi up through the harness: setup and first deploy (builds version 1)", () => s.up({ appRevision: rev1 }));
        builds.push({ version: "1", revision: rev1, seconds: Number((await historyLine(s))[5]) || 0 });
        await step("deploy version 2 through the harness (builds version 2)", () => s.up({ appRevision: rev2 }));
        builds.push({ version: "2", revision: rev2, seconds: Number((await historyLine(s))[5]) || 0 });
        log(`builds: ${builds.map(b => `version ${b.version} ${b.seconds}s`).join(", ")}`);
        const machine = await machineInfo(s);
        log(`machine: ${JSON.stringify(machine)}`);
        await s.sh(`cat >${BENCH_SCRIPT}.tmp && chmod 0755 ${BENCH_SCRIPT}.tmp && mv -f ${BENCH_SCRIPT}.tmp ${BENCH_SCRIPT}`, "root", benchScript());
        const methods: MethodResult[] = [];
        for (const m of opts.methods) {
            methods.push(await step(`method ${m}: ${opts.deploys} deploys and a rollback under load`, () => runMethod(s, m, opts, rv)));
        }
        await s.sh(`${BENCH_SCRIPT} reset`);
        const result: BenchResult = {
            date: new Date().toISOString(),
            machine,
            settings: {
                deploys: opts.deploys,
                concurrency: opts.concurrency,
                mix: { get: 60, slowGet: 20, post: 20 },
                slowMs: 300,
                warmupSeconds: opts.warmupSeconds,
                steadySeconds: opts.steadySeconds,
                gapSeconds: opts.gapSeconds,
                appWarmupPath: WARMUP_PATH,
                appWarmupRequests: WARMUP_REQUESTS,
                appJavaOpts: opts.javaOpts,
            },
            builds,
            methods,
            totalSeconds: Math.round((Date.now() - t0) / 1000),
        };
        return writeOutputs(result, opts.out);
    } finally {
        process.removeListener("SIGINT", onSignal);
        process.removeListener("SIGTERM", onSignal);
        if (server) await server.stop().catch(e => log(`stopping the test host failed: ${e}`));
        fs.rmSync(work, { recursive: true, force: true });
    }
}

/** Rewrites the .md and .svg next to a JSON written earlier (after a change to the report code). */
export function renderFromJson(jsonPath: string): BenchOutput {
    const result = JSON.parse(fs.readFileSync(jsonPath, "utf8")) as BenchResult;
    return writeOutputs(result, jsonPath);
}

async function main(): Promise<void> {
    const args = process.argv.slice(2);
    if (args[0] === "--render") {
        if (!args[1]) throw new Error("--render needs the path of a results JSON");
        const out = renderFromJson(path.resolve(args[1]));
        console.log(`table:   ${out.markdownPath}\npicture: ${out.svgPath}`);
        return;
    }
    const opts = parseArgs(args);
    const out = await runBenchmark(opts);
    console.log("");
    console.log(fs.readFileSync(out.markdownPath, "utf8"));
    console.log(`results: ${out.jsonPath}`);
    console.log(`table:   ${out.markdownPath}`);
    console.log(`picture: ${out.svgPath}`);
}

if (require.main === module) {
    main().catch(e => {
        console.error(e instanceof Error ? e.stack ?? e.message : e);
        process.exit(1);
    });
}
