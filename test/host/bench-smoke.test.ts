// The benchmark's smoke mode, so that it cannot rot: one deploy of one method
// (the rotation) on a test host of its own, then the JSON must have the
// documented shape and sane numbers. No performance target is asserted here;
// `npm run bench` is where those are measured.
import * as assert from "assert";
import * as fs from "fs";
import * as path from "path";
import { DEFAULT_OPTIONS, runBenchmark } from "../../bench/run";
import { WARMUP_REQUESTS } from "../../bench/methods";
import { BenchResult, METHOD_NAMES } from "../../bench/report";
import { ROLLBACK_WARMUP_REQUESTS } from "../../infra/rotation";
import { tempDir } from "../support/tmp";

describe("benchmark smoke mode (--deploys 1, rotation only)", function () {
    // Host start, setup, two builds and about 30 s of load.
    this.timeout(1_500_000);
    let dir: string;
    let result: BenchResult;
    let files: { jsonPath: string; markdownPath: string; svgPath: string };

    before(async function () {
        dir = tempDir("bench-smoke");
        const out = await runBenchmark({
            ...DEFAULT_OPTIONS,
            deploys: 1,
            methods: ["rotation"],
            out: path.join(dir, "latest.json"),
            warmupSeconds: 2,
            steadySeconds: 5,
            gapSeconds: 1,
            hostName: "bench-smoke",
            hostIndex: 61,
        });
        files = out;
        result = JSON.parse(fs.readFileSync(out.jsonPath, "utf8"));
    });

    after(function () {
        if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    it("writes the JSON, the Markdown table and the SVG next to each other", () => {
        assert.strictEqual(path.dirname(files.markdownPath), path.dirname(files.jsonPath));
        const md = fs.readFileSync(files.markdownPath, "utf8");
        assert.match(md, /\| `rotation` \|/);
        const svg = fs.readFileSync(files.svgPath, "utf8");
        assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
        assert.match(svg, /data-method="rotation"/);
    });

    it("has the documented top-level shape, with the machine's versions read on the test host", () => {
        assert.ok(!Number.isNaN(Date.parse(result.date)), result.date);
        for (const k of ["nginx", "supervisor", "java", "leiningen", "kernel"]) {
            assert.strictEqual(typeof result.machine[k], "string", k);
            assert.ok(String(result.machine[k]).length > 0, `machine.${k} is empty`);
        }
        assert.ok(Number(result.machine.cpus) >= 1);
        assert.deepStrictEqual(result.builds.map(b => b.version), ["1", "2"]);
        for (const b of result.builds) assert.ok(b.seconds > 0, `version ${b.version} was built (${b.seconds}s)`);
        assert.strictEqual(result.methods.length, 1);
    });

    it("the rotation's figures have the documented shape and sane values", () => {
        const m = result.methods[0];
        assert.strictEqual(m.name, "rotation");
        assert.ok((METHOD_NAMES as readonly string[]).includes(m.name));
        assert.strictEqual(m.deploys, 1);
        assert.ok(m.requests > 100, `load ran (${m.requests} requests)`);
        assert.ok(Number.isInteger(m.failed) && m.failed >= 0 && m.failed <= m.requests);
        assert.deepStrictEqual(Object.keys(m.failures).sort(), ["echo", "status", "transport"]);
        assert.strictEqual(m.failures.echo + m.failures.status + m.failures.transport, m.failed);
        for (const k of ["steadyP99Ms", "deployP99Ms", "steadyP50Ms", "deployP50Ms", "maxMs"] as const) {
            assert.ok(Number.isFinite(m.fastGet[k]) && m.fastGet[k] > 0, `fastGet.${k} = ${m.fastGet[k]}`);
        }
        assert.ok(m.fastGet.steadyP50Ms <= m.fastGet.steadyP99Ms);
        assert.ok(m.fastGet.deployP50Ms <= m.fastGet.deployP99Ms && m.fastGet.deployP99Ms <= m.fastGet.maxMs);
        for (const k of ["build", "boot", "gate", "switch", "drain"] as const) {
            assert.ok(Number.isFinite(m.phasesSeconds[k]) && m.phasesSeconds[k] >= 0, `phasesSeconds.${k} = ${m.phasesSeconds[k]}`);
        }
        assert.strictEqual(m.phasesSeconds.build, 0, "the release existed: no rebuild");
        assert.ok(m.phasesSeconds.boot + m.phasesSeconds.gate > 0, "a JVM booted");
        assert.ok(m.phasesSeconds.switch < 30, "the switch is timed");
        assert.ok(m.rollbackSeconds !== null && m.rollbackSeconds > 0 && m.rollbackSeconds < 300, `rollbackSeconds = ${m.rollbackSeconds}`);
        assert.strictEqual(m.failedDeploys, 0, JSON.stringify(m.runs));
        assert.deepStrictEqual(m.runs.map(r => [r.kind, r.version]), [["deploy", "2"], ["rollback", "1"]]);
        // The sample app's config asks for more warm-up than a rollback sends.
        assert.ok(WARMUP_REQUESTS > ROLLBACK_WARMUP_REQUESTS);
        assert.deepStrictEqual(m.runs.map(r => r.warmupRequests), [WARMUP_REQUESTS, ROLLBACK_WARMUP_REQUESTS]);
        assert.ok(m.timeline.requests.length > 5);
        assert.strictEqual(m.timeline.deployWindows.length, 1);
    });
});
