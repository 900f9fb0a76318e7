// The benchmark's pure part, with hand-made records and deploys: the figures,
// the Markdown table and the SVG.
import * as assert from "assert";
import { parseBenchOutput, phasesOf, warmupRequestsOf } from "../../bench/methods";
import {
    BenchResult, DeployRun, escapeXml, fastGetByPart, fastGetLatency, LoadRecord, markdownPartsTable, markdownReport, markdownTable, niceMax, percentile,
    renderSvg, summarizeMethod, zeroPhases,
} from "../../bench/report";
import { DEFAULT_OPTIONS, parseArgs } from "../../bench/run";

const T0 = 1_700_000_000_000;

function rec(startS: number, ms: number, kind: LoadRecord["kind"] = "get", extra: Partial<LoadRecord> = {}): LoadRecord {
    return { start: T0 + startS * 1000, end: T0 + startS * 1000 + ms, kind, version: "1", ...extra };
}

function deploy(fromS: number, toS: number, version: string, extra: Partial<DeployRun> = {}): DeployRun {
    return {
        kind: "deploy",
        revision: `rev${version}`,
        version,
        startMs: T0 + fromS * 1000,
        endMs: T0 + toS * 1000,
        phases: { ...zeroPhases(), boot: 1, gate: 2, switch: 0.1, drain: 0.3, stop: 0.2 },
        ok: true,
        ...extra,
    };
}

describe("bench report", () => {
    describe("percentile", () => {
        it("is the nearest rank of an ascending array, 0 when empty", () => {
            const xs = Array.from({ length: 100 }, (_, i) => i + 1);
            assert.strictEqual(percentile(xs, 50), 50);
            assert.strictEqual(percentile(xs, 99), 99);
            assert.strictEqual(percentile(xs, 100), 100);
            assert.strictEqual(percentile([7], 99), 7);
            assert.strictEqual(percentile([], 50), 0);
        });
    });

    describe("fastGetLatency", () => {
        it("splits the fast GETs into the steady window and the deploy windows, ignoring other kinds", () => {
            const records = [
                rec(0, 1), rec(1, 2), rec(2, 3), rec(3, 4), // steady [0, 4)
                rec(5, 10), rec(6, 20), // deploy [5, 7)
                rec(5.5, 5000, "slow"), // not a fast GET
                rec(8, 999), // outside both
            ];
            const s = fastGetLatency(records, [T0, T0 + 4000], [[T0 + 5000, T0 + 7000]]);
            assert.strictEqual(s.steadyCount, 4);
            assert.strictEqual(s.deployCount, 2);
            assert.strictEqual(s.steadyP50Ms, 2);
            assert.strictEqual(s.steadyP99Ms, 4);
            assert.strictEqual(s.deployP50Ms, 10);
            assert.strictEqual(s.deployP99Ms, 20);
            assert.strictEqual(s.maxMs, 20);
            assert.strictEqual(s.p99Ratio, 5);
        });

        it("splits each deploy window at its switch", () => {
            const records = [rec(0, 1), rec(5, 30), rec(5.5, 40), rec(6.1, 3), rec(6.5, 2), rec(9, 50), rec(9.5, 4)];
            const s = fastGetLatency(records, [T0, T0 + 1000], [[T0 + 5000, T0 + 7000], [T0 + 9000, T0 + 10000]], [T0 + 6000, T0 + 9200]);
            assert.strictEqual(s.beforeSwitchP99Ms, 50);
            assert.strictEqual(s.afterSwitchP99Ms, 4);
            assert.strictEqual(s.deployP99Ms, 50);
        });

        it("gives ratio 0 rather than dividing by zero when there is no steady state", () => {
            const s = fastGetLatency([rec(5, 10)], [T0, T0 + 1000], [[T0 + 4000, T0 + 6000]]);
            assert.strictEqual(s.p99Ratio, 0);
        });
    });

    describe("fastGetByPart", () => {
        const phases = { ...zeroPhases(), boot: 1, gate: 1, warmup: 2, ramp: 3, switch: 0.1, drain: 0.3, stop: 0.2 };
        // healthy at 12, warmed up at 14, switched at 17.1, done at 20; the next from 22 (healthy at 24) to 30
        const deploys = [deploy(10, 20, "2", { phases }), deploy(22, 30, "1", { phases })];

        it("splits the deploys' fast GETs into until healthy, warm-up, ramp (with the switch), after the switch, and between deploys", () => {
            const records = [
                rec(5, 1000), // before the first deploy
                rec(11, 5), rec(23, 50), // until healthy
                rec(13, 6), // warm-up
                rec(15, 7), rec(17.05, 8), // ramp, the switch itself
                rec(15.5, 500, "slow"), // not a fast GET
                rec(18, 9), // after the switch
                rec(21, 4), // between the two deploys
                rec(31, 100), // after the last deploy (the rollback's time)
            ];
            assert.deepStrictEqual(fastGetByPart(records, deploys), { untilHealthy: 50, warmup: 6, ramp: 8, afterSwitch: 9, betweenDeploys: 4 });
        });

        it("gives null for a part no fast GET started in: the other methods have no warm-up or ramp", () => {
            const plain = [deploy(10, 14, "2"), deploy(16, 20, "1")]; // boot 1, gate 2, switch 0.1
            const parts = fastGetByPart([rec(11, 3), rec(13.2, 4), rec(15, 2)], plain);
            assert.deepStrictEqual(parts, { untilHealthy: 3, warmup: null, ramp: null, afterSwitch: 4, betweenDeploys: 2 });
        });
    });

    describe("summarizeMethod", () => {
        const records: LoadRecord[] = [
            rec(0.1, 2), rec(0.5, 2, "post"), rec(1.2, 3), rec(1.9, 301, "slow"), // steady
            rec(3.1, 5), rec(3.2, 6, "get", { failure: "status" }), rec(3.3, 7, "post", { failure: "echo" }),
            rec(3.5, 4, "get", { version: "2" }), rec(3.6, 4, "get", { version: "1" }), // old version still seen at 3.6
            rec(4.2, 4, "get", { version: "2" }),
            rec(6.1, 4, "get", { failure: "transport", version: undefined }), // rollback window
            rec(8.5, 3, "get", { failure: "status" }), // after the rollback's script returned: still the rollback's
        ];
        const result = summarizeMethod({
            name: "rotation",
            records,
            loadStartMs: T0,
            loadEndMs: T0 + 9000,
            steady: [T0, T0 + 2000],
            deploys: [deploy(3, 5, "2")],
            rollback: { ...deploy(6, 7, "1"), kind: "rollback" },
        });

        it("counts requests and failures by kind over the whole run, and per deploy until the next one starts", () => {
            assert.strictEqual(result.requests, records.length);
            assert.strictEqual(result.failed, 4);
            assert.deepStrictEqual(result.failures, { status: 2, transport: 1, echo: 1 });
            assert.deepStrictEqual(result.deployWindowFailures, { status: 1, transport: 0, echo: 1 });
            assert.strictEqual(result.failedPerDeploy, 2);
            assert.strictEqual(result.rollbackFailed, 2);
            assert.strictEqual(result.deploys, 1);
            assert.strictEqual(result.failedDeploys, 0);
        });

        it("has the documented shape", () => {
            for (const k of ["steadyP99Ms", "deployP99Ms", "steadyP50Ms", "deployP50Ms", "maxMs"]) {
                assert.strictEqual(typeof (result.fastGet as unknown as Record<string, unknown>)[k], "number", k);
            }
            assert.deepStrictEqual(Object.keys(result.phasesSeconds).slice(0, 5), ["build", "boot", "gate", "switch", "drain"]);
            assert.strictEqual(result.rollbackSeconds, 1);
        });

        it("averages the phases and adds up the time to serving", () => {
            assert.deepStrictEqual(result.phasesSeconds, { build: 0, boot: 1, gate: 2, switch: 0.1, drain: 0.3, stop: 0.2, warmup: 0, ramp: 0 });
            assert.strictEqual(result.toServingSeconds, 3.1);
            assert.strictEqual(result.deploySeconds, 2);
        });

        it("finds when the new version got all traffic from the versions the client saw", () => {
            assert.strictEqual(result.runs[0].newVersionOnlyAfterSeconds, 0.6);
            assert.strictEqual(result.runs[0].failed, 2);
            assert.strictEqual(result.runs[1].kind, "rollback");
            assert.strictEqual(result.runs[1].failed, 2);
        });

        it("measures how long clients saw errors, per deploy", () => {
            assert.strictEqual(result.runs[0].failingSeconds, 0.11);
            assert.strictEqual(result.runs[1].failingSeconds, 2.4);
            assert.strictEqual(result.failingSecondsPerDeploy, 0.11);
        });

        it("builds a per-second timeline with the windows in seconds since the load started", () => {
            assert.strictEqual(result.timeline.requests.length, 9);
            assert.deepStrictEqual(result.timeline.requests, [2, 2, 0, 5, 1, 0, 1, 0, 1]);
            assert.deepStrictEqual(result.timeline.failures, [0, 0, 0, 2, 0, 0, 1, 0, 1]);
            assert.deepStrictEqual(result.timeline.deployWindows, [[3, 5]]);
            assert.deepStrictEqual(result.timeline.rollbackWindow, [6, 7]);
            assert.deepStrictEqual(result.timeline.steadyWindow, [0, 2]);
        });

        it("counts failed deploys", () => {
            const r = summarizeMethod({
                name: "seed", records: [], loadStartMs: T0, loadEndMs: T0 + 1000, steady: [T0, T0 + 1000],
                deploys: [deploy(0, 1, "2", { ok: false, error: "exit 1" })],
            });
            assert.strictEqual(r.failedDeploys, 1);
            assert.strictEqual(r.rollbackSeconds, null);
            assert.strictEqual(r.runs[0].error, "exit 1");
        });
    });

    function sampleResult(): BenchResult {
        const mk = (name: string, failed: number) => summarizeMethod({
            name,
            records: [rec(0.5, 2), rec(1.5, 3), rec(2.5, 9, "get", failed ? { failure: "transport" } : {})],
            loadStartMs: T0,
            loadEndMs: T0 + 4000,
            steady: [T0, T0 + 2000],
            deploys: [deploy(2, 3, "2")],
            rollback: { ...deploy(3, 3.5, "1"), kind: "rollback" },
        });
        return {
            date: "2025-01-02T03:04:05.000Z",
            machine: { nginx: "1.22.1", supervisor: "4.2.5", java: "openjdk 17", leiningen: "2.9.10", cpus: 2, kernel: "6.1.0" },
            settings: { deploys: 1, concurrency: 32, appJavaOpts: "" },
            builds: [{ version: "1", revision: "a", seconds: 40.5 }, { version: "2", revision: "b", seconds: 38 }],
            methods: [mk("rotation", 0), mk("restart", 1)],
            totalSeconds: 99,
        };
    }

    describe("markdownTable", () => {
        it("has a header, an alignment row and one row per method in order", () => {
            const lines = markdownTable(sampleResult()).trimEnd().split("\n");
            assert.strictEqual(lines.length, 4);
            assert.match(lines[0], /^\| Method \| Deploys \| Requests \| Failed \|/);
            assert.match(lines[1], /^\| --- \| ---: \|/);
            assert.match(lines[2], /^\| `rotation` \| 1 \| 3 \| 0 \| 0\.00 \| 0\.00 \| 0 \/ 0 \/ 0 \|/);
            assert.match(lines[3], /^\| `restart` \| 1 \| 3 \| 1 \| 1\.00 \| 0\.01 \| 0 \/ 1 \/ 0 \|/);
            const cells = lines.map(l => l.split(" | ").length);
            assert.ok(cells.every(c => c === cells[0]), "every row has as many cells as the header");
            assert.match(lines[2], /\| 2\.0 → 9\.0 \| 3\.0 → 9\.0 \|/, "p50 and p99, steady → deploy");
            assert.match(lines[2], /\| 3\.00× \|/, "p99 ratio");
        });

        it("has a table of the fast GET's p99 by part of the deploys, with – for a part that has none", () => {
            const result = sampleResult();
            result.methods[0].fastGetP99ByPartMs = { untilHealthy: 4.2, warmup: 5.1, ramp: 6, afterSwitch: 7.25, betweenDeploys: 3.3 };
            result.methods[1].fastGetP99ByPartMs = { untilHealthy: 4, warmup: null, ramp: null, afterSwitch: 20, betweenDeploys: 2 };
            const lines = markdownPartsTable(result).trimEnd().split("\n");
            assert.deepStrictEqual(lines, [
                "| Method | Steady | Until healthy | Warm-up | Ramp and switch | After the switch | Between deploys |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
                "| `rotation` | 3.0 | 4.2 | 5.1 | 6.0 | 7.3 | 3.3 |",
                "| `restart` | 3.0 | 4.0 | – | – | 20.0 | 2.0 |",
            ]);
            assert.ok(markdownReport(result).includes(lines.join("\n")), "the report has it");
        });

        it("the report states date, machine, builds and links the picture", () => {
            const md = markdownReport(sampleResult(), "latest.svg");
            assert.match(md, /^# Deploy benchmark, 2025-01-02T03:04:05\.000Z/);
            assert.match(md, /nginx 1\.22\.1/);
            assert.match(md, /version 1: 40\.5 s/);
            assert.match(md, /Settings: deploys 1, concurrency 32, appJavaOpts \(none\)\./, "an empty setting says so");
            assert.match(md, /!\[.*\]\(latest\.svg\)/);
        });
    });

    describe("renderSvg", () => {
        const svg = renderSvg(sampleResult());

        it("is one well-formed svg element with a panel per method", () => {
            assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
            assert.match(svg.trimEnd(), /<\/svg>$/);
            assert.strictEqual((svg.match(/<g class="panel"/g) ?? []).length, 2);
            assert.strictEqual((svg.match(/<g /g) ?? []).length, (svg.match(/<\/g>/g) ?? []).length);
            assert.ok(svg.includes('data-method="rotation"') && svg.includes('data-method="restart"'));
        });

        it("draws requests as a line, failures in a second colour, deploy and rollback windows", () => {
            assert.strictEqual((svg.match(/<polyline class="requests"/g) ?? []).length, 2);
            assert.strictEqual((svg.match(/<rect class="failures"/g) ?? []).length, 1, "only restart failed");
            assert.strictEqual((svg.match(/<rect class="deploy"/g) ?? []).length, 2);
            assert.strictEqual((svg.match(/<rect class="rollback"/g) ?? []).length, 2);
            assert.doesNotMatch(svg, /NaN|undefined|Infinity/);
        });

        it("escapes text", () => {
            assert.strictEqual(escapeXml(`a<b & "c">`), "a&lt;b &amp; &quot;c&quot;&gt;");
        });

        it("rounds axis maxima up to 1, 2 or 5 times a power of ten", () => {
            assert.deepStrictEqual([niceMax(0), niceMax(1), niceMax(3), niceMax(7), niceMax(120), niceMax(2000)], [1, 1, 5, 10, 200, 2000]);
        });
    });

    describe("parsing the test host's output", () => {
        it("takes the rotation's phases from its history line and its time-stamped output", () => {
            const out = [
                "MARK start 1000000",
                "LINE 1100000 ==> starting slot 2 (sample-app-live:sample-app-live-2) on abc",
                "LINE 4000000 ==> slot 2 healthy after 2.9s",
                "LINE 4600000 ==> warmed up slot 2: 500 of 500 requests to /health answered 2xx in 0.6s",
                "LINE 4720000 ==> traffic switched to slot 2",
                "LINE 5100000 ==> drained slot 1 in 0.3s",
                "LINE 5350000 ==> stopped slot 1",
                "MARK end 5400000",
                "HISTORY 2025-01-01T00:00:00+00:00\tlive\tabc\t2\tok\t0.0\t1.5\t1.4\t0.3\t0.6",
            ].join("\n");
            const parsed = parseBenchOutput(out);
            assert.strictEqual(parsed.startUs, 1000000);
            assert.strictEqual(parsed.endUs, 5400000);
            // The switch counts from the end of the warm-up, not from the health check.
            assert.deepStrictEqual(phasesOf(parsed), { build: 0, boot: 1.5, gate: 1.4, switch: 0.12, drain: 0.3, stop: 0.25, warmup: 0.6, ramp: 0 });
        });

        it("counts a ramp as its own phase (history column 11), and the switch from the end of the ramp", () => {
            const out = [
                "MARK start 1000000",
                "LINE 4000000 ==> slot 2 healthy after 2.9s",
                "LINE 4600000 ==> warmed up slot 2: 500 of 500 requests to / answered 2xx in 0.6s",
                "LINE 4610000 ==> ramping traffic to slot 2: 10 30 60 % of new requests, 1000 ms each, then all",
                "LINE 7650000 ==> ramped slot 2 up through 10 30 60 % of new requests in 3.04s",
                "LINE 7740000 ==> traffic switched to slot 2",
                "LINE 8000000 ==> drained slot 1 in 0.26s",
                "LINE 8100000 ==> stopped slot 1",
                "MARK end 8200000",
                "HISTORY 2025-01-01T00:00:00+00:00\tlive\tabc\t2\tok\t0.0\t1.5\t1.4\t0.26\t0.6\t3.04",
            ].join("\n");
            assert.deepStrictEqual(phasesOf(parseBenchOutput(out)), { build: 0, boot: 1.5, gate: 1.4, switch: 0.09, drain: 0.26, stop: 0.1, warmup: 0.6, ramp: 3.04 });
        });

        it("reads how many warm-up requests the rotation sent (none without a warm-up line)", () => {
            const warmed = "LINE 4600000 ==> warmed up slot 1: 9998 of 10000 requests to / answered 2xx in 2.1s";
            assert.strictEqual(warmupRequestsOf(parseBenchOutput(`MARK start 1\n${warmed}\nMARK end 2`)), 10000);
            assert.strictEqual(warmupRequestsOf(parseBenchOutput("MARK start 1\nLINE 2 ==> slot 1 healthy after 1s\nMARK end 2")), undefined);
        });

        it("takes the other methods' phases from PHASE lines (µs)", () => {
            const parsed = parseBenchOutput("MARK start 5\nPHASE boot 1234567\nPHASE gate 2000000\nPHASE stop 10000\nMARK end 9\n");
            assert.deepStrictEqual(phasesOf(parsed), { build: 0, boot: 1.23, gate: 2, switch: 0, drain: 0, stop: 0.01, warmup: 0, ramp: 0 });
        });
    });
});

describe("bench options", () => {
    it("runs the app with the JVM's defaults, as the config does, unless --java-opts names options", () => {
        assert.strictEqual(DEFAULT_OPTIONS.javaOpts, "");
        assert.strictEqual(parseArgs([]).javaOpts, "");
        const o = parseArgs(["--methods", "rotation", "--java-opts", "-XX:TieredStopAtLevel=1 -Xmx512m", "--deploys", "3"]);
        assert.deepStrictEqual([o.javaOpts, o.methods, o.deploys], ["-XX:TieredStopAtLevel=1 -Xmx512m", ["rotation"], 3]);
        assert.throws(() => parseArgs(["--java-opts"]), /--java-opts needs the JVM options, in one argument/);
        assert.throws(() => parseArgs(["--methods", "rotation,fast"]), /unknown method fast \(known: rotation,/);
    });
});
