// The benchmark's pure part: turns the load client's records and the timed
// deploys of one method into the figures of bench/results/latest.json, and
// that JSON into a Markdown table and an SVG picture (plain SVG, no library).
// Nothing here touches the network, the clock or the file system.

export const METHOD_NAMES = ["rotation", "seed", "seed-max-fails-0", "nginx-reload", "restart", "rotation-no-ramp", "rotation-normal-boot", "rotation-cold"] as const;
export type MethodName = (typeof METHOD_NAMES)[number];

export type FailureKind = "status" | "transport" | "echo";
export const FAILURE_KINDS: FailureKind[] = ["status", "transport", "echo"];

/** The part of the load client's RequestRecord the figures need (epoch ms). */
export interface LoadRecord {
    start: number;
    end: number;
    kind: "get" | "slow" | "post";
    failure?: FailureKind;
    version?: string;
}

export interface Phases {
    build: number;
    boot: number;
    gate: number;
    /** The rotation's warm-up requests to the new slot, between the gate and the ramp. */
    warmup: number;
    /** The rotation's traffic ramp (shares of new requests to the new slot), between the warm-up and the switch. */
    ramp: number;
    switch: number;
    drain: number;
    /** Stopping the old process (after the drain), where the method has one. */
    stop: number;
}

/** One timed deploy (or the rollback) of a method, as measured on the test host. */
export interface DeployRun {
    kind: "deploy" | "rollback";
    revision: string;
    /** The app version the deploy goes to (X-App-Version of the new release). */
    version: string;
    /** Epoch ms, from the test host's clock (the same kernel clock as the load client's). */
    startMs: number;
    endMs: number;
    phases: Phases;
    /** The rotation's warm-up requests, from its output (the other methods have none). */
    warmupRequests?: number;
    ok: boolean;
    error?: string;
}

export interface MethodInput {
    name: string;
    records: LoadRecord[];
    loadStartMs: number;
    loadEndMs: number;
    /** [from, to) epoch ms: the steady-state window before the first deploy. */
    steady: [number, number];
    deploys: DeployRun[];
    rollback?: DeployRun;
    note?: string;
}

export interface LatencySummary {
    steadyP50Ms: number;
    steadyP99Ms: number;
    steadyMaxMs: number;
    deployP50Ms: number;
    deployP99Ms: number;
    deployMaxMs: number;
    /** The during-deploy maximum (the spec's maxMs). */
    maxMs: number;
    /** deployP99Ms / steadyP99Ms (0 when there is no steady figure). */
    p99Ratio: number;
    p50Ratio: number;
    steadyCount: number;
    deployCount: number;
    /** p99 inside the deploy windows before the switch (new process booting) and after it (new process serving, old one draining). */
    beforeSwitchP99Ms: number;
    afterSwitchP99Ms: number;
}

export interface DeploySummary {
    kind: "deploy" | "rollback";
    revision: string;
    version: string;
    ok: boolean;
    error?: string;
    /** Seconds since the method's load started. */
    atSeconds: number;
    seconds: number;
    phases: Phases;
    /** The rotation's warm-up requests (absent for the other methods). */
    warmupRequests?: number;
    /** Failed requests that started from this deploy's start until the next deploy (or the end of the load). */
    failed: number;
    /** From the first failed request's start to the last one's end among those (0 when none failed): how long clients saw errors. */
    failingSeconds: number;
    /**
     * From the deploy's start to the start of the last request answered by another
     * version (the new version serves everything after that); 0 if none was seen.
     */
    newVersionOnlyAfterSeconds: number;
}

export interface MethodResult {
    name: string;
    note?: string;
    deploys: number;
    requests: number;
    /** Failed requests over the whole load run of the method (steady state, deploys, rollback). */
    failed: number;
    failures: Record<FailureKind, number>;
    /**
     * Failed requests per deploy (rollback excluded), counting for each deploy the failures from its
     * start until the next deploy starts, since a method can break requests after its script returned.
     */
    failedPerDeploy: number;
    /** Mean of the deploys' failingSeconds: how long clients saw errors per deploy (fast 502s inflate counts, not this). */
    failingSecondsPerDeploy: number;
    deployWindowFailures: Record<FailureKind, number>;
    rollbackFailed: number;
    failedDeploys: number;
    fastGet: LatencySummary;
    /** The fast GET's p99 by part of the deploy windows, and between deploys (rollback excluded). */
    fastGetP99ByPartMs: PartsP99Ms;
    /** Mean over the deploys; build is 0 here because releases are built once (see the top-level builds). */
    phasesSeconds: Phases;
    /** Mean of build + boot + gate + warm-up + ramp + switch: deploy start to "the new version gets all new requests". */
    toServingSeconds: number;
    /** Mean wall time of a deploy, drain and stop included. */
    deploySeconds: number;
    rollbackSeconds: number | null;
    runs: DeploySummary[];
    timeline: Timeline;
}

export interface Timeline {
    /** Requests (ok + failed) started in each whole second since the load started (a partial last second is left out). */
    requests: number[];
    failures: number[];
    /** [from, to] seconds since the load started. */
    deployWindows: [number, number][];
    rollbackWindow: [number, number] | null;
    steadyWindow: [number, number];
}

export interface BuildTime {
    version: string;
    revision: string;
    seconds: number;
}

export interface BenchResult {
    date: string;
    machine: Record<string, string | number>;
    settings: Record<string, unknown>;
    builds: BuildTime[];
    methods: MethodResult[];
    totalSeconds: number;
}

// ---- statistics --------------------------------------------------------------

/** Nearest-rank percentile of an ascending array (0 for an empty one). */
export function percentile(sorted: number[], p: number): number {
    if (sorted.length === 0) return 0;
    const idx = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
    return sorted[Math.max(0, idx)];
}

export const round1 = (x: number): number => Math.round(x * 10) / 10;
export const round2 = (x: number): number => Math.round(x * 100) / 100;

function emptyFailures(): Record<FailureKind, number> {
    return { status: 0, transport: 0, echo: 0 };
}

function failingSpanSeconds(span: [number, number] | undefined): number {
    return span ? (span[1] - span[0]) / 1000 : 0;
}

function mean(xs: number[]): number {
    return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

const PHASE_KEYS: (keyof Phases)[] = ["build", "boot", "gate", "switch", "drain", "stop", "warmup", "ramp"];

export function zeroPhases(): Phases {
    return { build: 0, boot: 0, gate: 0, switch: 0, drain: 0, stop: 0, warmup: 0, ramp: 0 };
}

function meanPhases(runs: DeployRun[]): Phases {
    const out = zeroPhases();
    for (const k of PHASE_KEYS) out[k] = round2(mean(runs.map(r => r.phases[k])));
    return out;
}

/**
 * Latency of the fast GET (ok or not, as long as it completed) inside and outside the deploy
 * windows; `switchAt[i]` (epoch ms) splits window i into before and after its switch.
 */
export function fastGetLatency(records: LoadRecord[], steady: [number, number], deployWindows: [number, number][], switchAt: number[] = []): LatencySummary {
    const st: number[] = [];
    const dp: number[] = [];
    const before: number[] = [];
    const after: number[] = [];
    for (const r of records) {
        if (r.kind !== "get") continue;
        const ms = r.end - r.start;
        if (r.start >= steady[0] && r.start < steady[1]) {
            st.push(ms);
            continue;
        }
        const i = deployWindows.findIndex(([a, b]) => r.start >= a && r.start < b);
        if (i < 0) continue;
        dp.push(ms);
        (r.start < (switchAt[i] ?? Infinity) ? before : after).push(ms);
    }
    for (const xs of [st, dp, before, after]) xs.sort((a, b) => a - b);
    const s50 = percentile(st, 50), s99 = percentile(st, 99), d50 = percentile(dp, 50), d99 = percentile(dp, 99);
    const dmax = dp.length ? dp[dp.length - 1] : 0;
    return {
        steadyP50Ms: round1(s50),
        steadyP99Ms: round1(s99),
        steadyMaxMs: round1(st.length ? st[st.length - 1] : 0),
        deployP50Ms: round1(d50),
        deployP99Ms: round1(d99),
        deployMaxMs: round1(dmax),
        maxMs: round1(dmax),
        p99Ratio: s99 > 0 ? round2(d99 / s99) : 0,
        p50Ratio: s50 > 0 ? round2(d50 / s50) : 0,
        steadyCount: st.length,
        deployCount: dp.length,
        beforeSwitchP99Ms: round1(percentile(before, 99)),
        afterSwitchP99Ms: round1(percentile(after, 99)),
    };
}

/** The parts of the deploy windows the fast GET's p99 is split into, in order, and what lies between the windows. */
export const DEPLOY_PARTS = ["untilHealthy", "warmup", "ramp", "afterSwitch"] as const;
export type DeployPart = (typeof DEPLOY_PARTS)[number];

/**
 * Fast-GET p99 (ms) in each part of the deploy windows, and between one deploy's end and the next
 * one's start; null for a part no fast GET started in (the other methods have no warm-up or ramp).
 */
export type PartsP99Ms = Record<DeployPart | "betweenDeploys", number | null>;

/**
 * Where a deploy's parts end (epoch ms), from its phases: until healthy (build, boot, gate), the
 * warm-up, the ramp (with the switch itself), after the switch (drain and stop, to the window's end).
 */
export function partEndsMs(run: DeployRun): Record<DeployPart, number> {
    const p = run.phases;
    const untilHealthy = run.startMs + (p.build + p.boot + p.gate) * 1000;
    const warmup = untilHealthy + p.warmup * 1000;
    return { untilHealthy, warmup, ramp: switchedAtMs(run), afterSwitch: run.endMs };
}

/**
 * The fast GET's p99 in each part of the deploys (by the request's start), and between deploys
 * (a live JVM that took all traffic a few seconds before, with no deploy running): where a
 * deploy window's tail comes from.
 */
export function fastGetByPart(records: LoadRecord[], deploys: DeployRun[]): PartsP99Ms {
    const runs = [...deploys].sort((a, b) => a.startMs - b.startMs);
    const ends = runs.map(partEndsMs);
    const buckets: Record<keyof PartsP99Ms, number[]> = { untilHealthy: [], warmup: [], ramp: [], afterSwitch: [], betweenDeploys: [] };
    for (const r of records) {
        if (r.kind !== "get") continue;
        const i = runs.findIndex((d, k) => r.start >= d.startMs && r.start < (runs[k + 1]?.startMs ?? d.endMs));
        if (i < 0) continue;
        const part = r.start >= runs[i].endMs ? "betweenDeploys" : DEPLOY_PARTS.find(k => r.start < ends[i][k]) ?? "afterSwitch";
        buckets[part].push(r.end - r.start);
    }
    const out = {} as PartsP99Ms;
    for (const [k, xs] of Object.entries(buckets) as [keyof PartsP99Ms, number[]][]) {
        xs.sort((a, b) => a - b);
        out[k] = xs.length ? round1(percentile(xs, 99)) : null;
    }
    return out;
}

/** When a deploy's switch ended (epoch ms): its start plus build, boot, gate, warm-up, ramp and switch. */
export function switchedAtMs(run: DeployRun): number {
    const p = run.phases;
    return run.startMs + (p.build + p.boot + p.gate + p.warmup + p.ramp + p.switch) * 1000;
}

/** Everything the JSON says about one method, from its raw load records and timed deploys. */
export function summarizeMethod(input: MethodInput): MethodResult {
    const { records, loadStartMs } = input;
    const deployWindows = input.deploys.map(d => [d.startMs, d.endMs] as [number, number]);
    const failures = emptyFailures();
    const deployWindowFailures = emptyFailures();
    let failed = 0;
    let rollbackFailed = 0;
    const perRun = new Map<DeployRun, number>();
    const lastOther = new Map<DeployRun, number>();
    const failingSpan = new Map<DeployRun, [number, number]>();
    const runs = [...input.deploys, ...(input.rollback ? [input.rollback] : [])].sort((a, b) => a.startMs - b.startMs);
    // A deploy's failures are those that start between its start and the next deploy's (or the
    // end of the load): a method can break requests after its script has returned.
    const periodEnd = runs.map((_, i) => (i + 1 < runs.length ? runs[i + 1].startMs : Infinity));
    // Whole seconds only: a partial last second would look like a drop in throughput.
    const seconds = Math.max(1, Math.floor((input.loadEndMs - loadStartMs) / 1000));
    const requestsPerSecond = new Array<number>(seconds).fill(0);
    const failuresPerSecond = new Array<number>(seconds).fill(0);
    for (const r of records) {
        const second = Math.max(0, Math.floor((r.start - loadStartMs) / 1000));
        const inTimeline = second < seconds;
        if (inTimeline) requestsPerSecond[second]++;
        for (const run of runs) {
            // A request that started during the deploy, or up to 2 s after it, and got the old version.
            if (r.start >= run.startMs && r.start < run.endMs + 2000 && r.version !== undefined && r.version !== run.version && !r.failure) {
                lastOther.set(run, Math.max(lastOther.get(run) ?? run.startMs, r.start));
            }
        }
        if (!r.failure) continue;
        failed++;
        failures[r.failure]++;
        if (inTimeline) failuresPerSecond[second]++;
        for (let i = 0; i < runs.length; i++) {
            const run = runs[i];
            if (r.start >= run.startMs && r.start < periodEnd[i]) {
                perRun.set(run, (perRun.get(run) ?? 0) + 1);
                const span = failingSpan.get(run);
                failingSpan.set(run, span ? [Math.min(span[0], r.start), Math.max(span[1], r.end)] : [r.start, r.end]);
                if (run.kind === "deploy") deployWindowFailures[r.failure]++;
                else rollbackFailed++;
            }
        }
    }
    const rel = (t: number) => round2((t - loadStartMs) / 1000);
    const summaries: DeploySummary[] = runs.map(run => ({
        kind: run.kind,
        revision: run.revision,
        version: run.version,
        ok: run.ok,
        ...(run.error ? { error: run.error } : {}),
        atSeconds: rel(run.startMs),
        seconds: round2((run.endMs - run.startMs) / 1000),
        phases: run.phases,
        ...(run.warmupRequests !== undefined ? { warmupRequests: run.warmupRequests } : {}),
        failed: perRun.get(run) ?? 0,
        failingSeconds: round2(failingSpanSeconds(failingSpan.get(run))),
        newVersionOnlyAfterSeconds: round2(((lastOther.get(run) ?? run.startMs) - run.startMs) / 1000),
    }));
    const deployFailed = FAILURE_KINDS.reduce((a, k) => a + deployWindowFailures[k], 0);
    const deploySummaries = summaries.filter(s => s.kind === "deploy");
    const phases = meanPhases(input.deploys);
    return {
        name: input.name,
        ...(input.note ? { note: input.note } : {}),
        deploys: input.deploys.length,
        requests: records.length,
        failed,
        failures,
        failedPerDeploy: input.deploys.length ? round2(deployFailed / input.deploys.length) : 0,
        failingSecondsPerDeploy: round2(mean(deploySummaries.map(s => s.failingSeconds))),
        deployWindowFailures,
        rollbackFailed,
        failedDeploys: runs.filter(r => !r.ok).length,
        fastGet: fastGetLatency(records, input.steady, deployWindows, input.deploys.map(switchedAtMs)),
        fastGetP99ByPartMs: fastGetByPart(records, input.deploys),
        phasesSeconds: phases,
        toServingSeconds: round2(phases.build + phases.boot + phases.gate + phases.warmup + phases.ramp + phases.switch),
        deploySeconds: round2(mean(input.deploys.map(d => (d.endMs - d.startMs) / 1000))),
        rollbackSeconds: input.rollback ? round2((input.rollback.endMs - input.rollback.startMs) / 1000) : null,
        runs: summaries,
        timeline: {
            requests: requestsPerSecond,
            failures: failuresPerSecond,
            deployWindows: input.deploys.map(d => [rel(d.startMs), rel(d.endMs)]),
            rollbackWindow: input.rollback ? [rel(input.rollback.startMs), rel(input.rollback.endMs)] : null,
            steadyWindow: [rel(input.steady[0]), rel(input.steady[1])],
        },
    };
}

// ---- Markdown ------------------------------------------------------------------

/** Counts: two decimals when small, whole numbers when large. */
const fmtCount = (x: number): string => (Math.abs(x) >= 100 ? Math.round(x).toString() : x.toFixed(2));
const fmt = (x: number | null | undefined, digits = 1): string => (x === null || x === undefined || Number.isNaN(x) ? "–" : x.toFixed(digits));

/** The results table: one row per method, in the order of the JSON. */
export function markdownTable(result: BenchResult): string {
    const head = [
        "Method", "Deploys", "Requests", "Failed", "Failed / deploy", "Failing s / deploy", "status / transport / echo",
        "Fast GET p50 steady → deploy (ms)", "Fast GET p99 steady → deploy (ms)", "p99 ratio", "p99 before / after switch (ms)", "Max (ms)",
        "Boot (s)", "Gate (s)", "Warm-up (s)", "Ramp (s)", "Switch (s)", "Drain (s)", "Stop (s)", "To serving (s)", "Rollback (s)",
    ];
    const rows = result.methods.map(m => [
        `\`${m.name}\``,
        String(m.deploys),
        String(m.requests),
        String(m.failed),
        fmtCount(m.failedPerDeploy),
        fmt(m.failingSecondsPerDeploy, 2),
        FAILURE_KINDS.map(k => String(m.failures[k] ?? 0)).join(" / "),
        `${fmt(m.fastGet.steadyP50Ms)} → ${fmt(m.fastGet.deployP50Ms)}`,
        `${fmt(m.fastGet.steadyP99Ms)} → ${fmt(m.fastGet.deployP99Ms)}`,
        `${fmt(m.fastGet.p99Ratio, 2)}×`,
        `${fmt(m.fastGet.beforeSwitchP99Ms)} / ${fmt(m.fastGet.afterSwitchP99Ms)}`,
        fmt(m.fastGet.maxMs),
        fmt(m.phasesSeconds.boot, 2),
        fmt(m.phasesSeconds.gate, 2),
        fmt(m.phasesSeconds.warmup, 2),
        fmt(m.phasesSeconds.ramp ?? 0, 2),
        fmt(m.phasesSeconds.switch, 2),
        fmt(m.phasesSeconds.drain, 2),
        fmt(m.phasesSeconds.stop, 2),
        fmt(m.toServingSeconds, 2),
        fmt(m.rollbackSeconds, 2),
    ]);
    const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
    const out = [line(head), line(head.map((_, i) => (i === 0 ? "---" : "---:"))), ...rows.map(line)];
    return out.join("\n") + "\n";
}

/** Where the deploy windows' tail is: the fast GET's p99 in the steady window and by part of the deploys. */
export function markdownPartsTable(result: BenchResult): string {
    const head = ["Method", "Steady", "Until healthy", "Warm-up", "Ramp and switch", "After the switch", "Between deploys"];
    const rows = result.methods.filter(m => m.fastGetP99ByPartMs).map(m => {
        const parts = m.fastGetP99ByPartMs;
        return [`\`${m.name}\``, fmt(m.fastGet.steadyP99Ms), ...[...DEPLOY_PARTS, "betweenDeploys" as const].map(k => fmt(parts[k]))];
    });
    if (!rows.length) return "";
    const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
    return [line(head), line(head.map((_, i) => (i === 0 ? "---" : "---:"))), ...rows.map(line)].join("\n") + "\n";
}

/** The whole latest.md: a header with the date and machine, the table, the builds and the picture. */
export function markdownReport(result: BenchResult, svgName = "latest.svg"): string {
    const machine = Object.entries(result.machine).map(([k, v]) => `${k} ${v}`).join(", ");
    const builds = result.builds.map(b => `version ${b.version}: ${fmt(b.seconds)} s`).join(", ");
    const notes = result.methods.filter(m => m.note).map(m => `- \`${m.name}\`: ${m.note}`);
    const parts = markdownPartsTable(result);
    return [
        `# Deploy benchmark, ${result.date}`,
        "",
        `Machine: ${machine}.`,
        `Settings: ${Object.entries(result.settings).map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v === "" ? "(none)" : String(v)}`).join(", ")}.`,
        `Run time: ${fmt(result.totalSeconds, 0)} s.`,
        "",
        markdownTable(result).trimEnd(),
        "",
        `Failed counts every failed request of the method's load run (steady state, deploys and rollback); failed / deploy counts, per deploy, those that started between its start and the next deploy's start; ` +
            `failing s / deploy is how long clients saw errors per deploy (from the first failed request to the end of the last; fast 502s inflate the counts, not this). ` +
            `Latencies are of the fast GET, in the steady window before the deploys and inside the deploy windows (script start to end). ` +
            `Phases are means over the deploys. Releases are built once per version (lein uberjar: ${builds || "–"}), so deploys do not rebuild.`,
        ...(parts ? ["", "Fast GET p99 (ms) by part of the deploys (by each request's start; ramp and switch: from the warm-up's end to the switch of all traffic; after the switch: the drain and the stop; between deploys: from one deploy's end to the next one's start):", "", parts.trimEnd()] : []),
        ...(notes.length ? ["", ...notes] : []),
        "",
        `![Requests per second during the deploys](${svgName})`,
        "",
    ].join("\n");
}

// ---- SVG ------------------------------------------------------------------------

export function escapeXml(s: string): string {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** A rounded-up axis maximum: 1, 2 or 5 times a power of ten. */
export function niceMax(x: number): number {
    if (!(x > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(x)));
    for (const m of [1, 2, 5, 10]) if (x <= m * p) return m * p;
    return 10 * p;
}

export const SVG_COLORS = { requests: "#2b6cb0", failures: "#e53e3e", deploy: "#d9d9d9", rollback: "#f6d8a8", steady: "#eef5ee" };

/**
 * Small multiples: one panel per method, successfully answered requests per second over
 * time (blue line), failed requests per second (red bars, same scale, clipped at the
 * panel's top), deploy windows in grey, the rollback in orange and the steady-state
 * window in green. All panels share both axes.
 */
export function renderSvg(result: BenchResult): string {
    const width = 960;
    const left = 170;
    const right = 20;
    const panelHeight = 100;
    const gap = 34;
    const top = 58;
    const plotW = width - left - right;
    const methods = result.methods;
    const height = top + methods.length * (panelHeight + gap) + 30;
    const maxSeconds = Math.max(10, ...methods.map(m => m.timeline.requests.length));
    // One y scale for every panel, from the successful requests: fast 502s can be ten times as
    // many per second as real answers, so failure bars are clipped at the top (the count is in their title).
    const okPerSecond = (m: MethodResult) => m.timeline.requests.map((v, s) => v - (m.timeline.failures[s] ?? 0));
    const yMax = niceMax(Math.max(1, ...methods.flatMap(okPerSecond)));
    const yScale = panelHeight / yMax;
    const xScale = plotW / maxSeconds;
    const f = (x: number) => (Math.round(x * 10) / 10).toString();
    const parts: string[] = [];
    parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
    parts.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
    parts.push(`<text x="${left}" y="20" font-size="15" font-weight="bold">${escapeXml(`Requests per second during deploys (${result.date})`)}</text>`);
    const legend: [string, string][] = [
        [SVG_COLORS.requests, "answered requests/s"],
        [SVG_COLORS.failures, "failed requests/s"],
        [SVG_COLORS.deploy, "deploy window"],
        [SVG_COLORS.rollback, "rollback"],
        [SVG_COLORS.steady, "steady-state window"],
    ];
    legend.forEach(([color, label], i) => {
        const x = left + i * 150;
        parts.push(`<rect x="${x}" y="32" width="14" height="10" fill="${color}" stroke="#999" stroke-width="0.5"/>`);
        parts.push(`<text x="${x + 19}" y="41">${escapeXml(label)}</text>`);
    });
    methods.forEach((m, i) => {
        const y0 = top + i * (panelHeight + gap);
        const t = m.timeline;
        const X = (s: number) => left + s * xScale;
        const Y = (v: number) => y0 + panelHeight - v * yScale;
        parts.push(`<g class="panel" data-method="${escapeXml(m.name)}">`);
        parts.push(`<text x="10" y="${y0 + 16}" font-weight="bold">${escapeXml(m.name)}</text>`);
        parts.push(`<text x="10" y="${y0 + 34}">${escapeXml(`${m.failed} failed / ${m.requests}`)}</text>`);
        parts.push(`<text x="10" y="${y0 + 50}">${escapeXml(`${fmtCount(m.failedPerDeploy)} failed/deploy`)}</text>`);
        parts.push(`<text x="10" y="${y0 + 82}">${escapeXml(`errors for ${fmt(m.failingSecondsPerDeploy, 1)} s/deploy`)}</text>`);
        parts.push(`<text x="10" y="${y0 + 66}">${escapeXml(`p99 ${fmt(m.fastGet.steadyP99Ms)} → ${fmt(m.fastGet.deployP99Ms)} ms`)}</text>`);
        parts.push(`<rect x="${left}" y="${y0}" width="${plotW}" height="${panelHeight}" fill="#fafafa" stroke="#bbb" stroke-width="0.5"/>`);
        const windows: [[number, number], string, string][] = [
            [t.steadyWindow, SVG_COLORS.steady, "steady"],
            ...t.deployWindows.map(w => [w, SVG_COLORS.deploy, "deploy"] as [[number, number], string, string]),
            ...(t.rollbackWindow ? [[t.rollbackWindow, SVG_COLORS.rollback, "rollback"] as [[number, number], string, string]] : []),
        ];
        for (const [[a, b], color, cls] of windows) {
            parts.push(`<rect class="${cls}" x="${f(X(a))}" y="${y0}" width="${f(Math.max(1, (b - a) * xScale))}" height="${panelHeight}" fill="${color}"/>`);
        }
        t.failures.forEach((v, s) => {
            if (v > 0) {
                const h = Math.max(2, v * yScale); // clipped at the panel's top below
                parts.push(`<rect class="failures" x="${f(X(s))}" y="${f(y0 + panelHeight - Math.min(panelHeight, h))}" width="${f(Math.max(1.5, xScale))}" height="${f(Math.min(panelHeight, h))}" fill="${SVG_COLORS.failures}"><title>${v} failed at ${s} s</title></rect>`);
            }
        });
        const points = okPerSecond(m).map((v, s) => `${f(X(s + 0.5))},${f(Y(v))}`).join(" ");
        if (t.requests.length) parts.push(`<polyline class="requests" fill="none" stroke="${SVG_COLORS.requests}" stroke-width="1.5" points="${points}"/>`);
        // y axis: 0 and max
        parts.push(`<text x="${left - 4}" y="${y0 + panelHeight}" text-anchor="end" font-size="10">0</text>`);
        parts.push(`<text x="${left - 4}" y="${y0 + 9}" text-anchor="end" font-size="10">${yMax}/s</text>`);
        // x axis ticks every 30 s (or 10 s for short runs)
        const step = maxSeconds > 120 ? 30 : 10;
        for (let s = 0; s <= maxSeconds; s += step) {
            parts.push(`<text x="${f(X(s))}" y="${y0 + panelHeight + 12}" text-anchor="middle" font-size="10" fill="#555">${s}</text>`);
        }
        parts.push(`</g>`);
    });
    parts.push(`<text x="${left + plotW / 2}" y="${height - 8}" text-anchor="middle" fill="#555">seconds since the method's load started</text>`);
    parts.push(`</svg>`);
    return parts.join("\n") + "\n";
}
