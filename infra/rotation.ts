// Slot rotation: the deploy script, the root-owned traffic switch helper, the
// sudoers rule that lets the deploy user run exactly that helper, and the
// systemd unit that restores the live slot after a reboot. Pure functions:
// layout + settings in, file contents out. Every path, name and port comes
// from the layout (names.ts); the templates never spell one themselves.

import { createHash } from "crypto";
import { ANSWERS_WINDOW_SECONDS, BAKE_SECONDS_MAX, BOOT_PRIORITIES, HEALTH_REQUEST_TIMEOUT_SECONDS, JAVA_OPTS_ALLOWED, RAMP_ERROR_MIN_RESPONSES, RAMP_SECONDS_MAX, RAMP_STEPS_PERCENT, Settings, URL_PATH, WARMUP_REQUESTS_MAX } from "./config";
import { EnvironmentLayout, RELEASE_JAR, slotProgram, SUPERVISOR_SOCKET, SUPERVISOR_START_SECONDS } from "./names";
import { render } from "./render";

/** The ramp's shares as the scripts list them: the deploy script's loop, the helper's check. */
const RAMP_STEPS = RAMP_STEPS_PERCENT.join(" ");

export interface RotationSettings {
    /** Host header sent by the health check (nginx server_name of the environment). */
    domain: string;
    /** Path that must answer 2xx before the slot gets traffic, e.g. `/health`. */
    healthPath: string;
    /** Upper bound for a new slot to answer the health check. */
    startTimeoutSeconds: number;
    /** Upper bound for in-flight requests on the old slot to finish before it is stopped. */
    drainTimeoutSeconds: number;
    /** Releases kept on disk (the live and the previous one are never pruned). */
    keepReleases: number;
    /** How long a second deploy of the same environment waits for the first one. */
    lockTimeoutSeconds: number;
    /** The slots' JVM options (validated in config); the memory check reads -Xmx from them. */
    javaOpts: string;
    /** `idle`: the new slot boots at idle CPU priority until the switch; `normal`: at normal priority. */
    bootPriority: Settings["bootPriority"];
    /** GETs of warmupPath sent to the new slot after its gate, before the switch. */
    warmupRequests: number;
    warmupPath: string;
    /** Seconds over which new requests move to the new slot in RAMP_STEPS_PERCENT steps (0: at once). */
    rampSeconds: number;
    /** Percentage points by which the new slot's share of 5xx answers in the ramp (and a bake) may exceed the old slot's (100: never fails). */
    rampMaxErrorPercent: number;
    /** Seconds after the switch the old slot stays up while the new one serves everything (0: stop it once drained). */
    bakeSeconds: number;
}

/**
 * The kernel's timeout (per network namespace) for conntrack entries of reset connections; the
 * switch helper sets it to 0 (see the helper's header for why).
 */
export const CONNTRACK_CLOSE_TIMEOUT = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close";

/**
 * The nice value of a live JVM's JIT compiler threads when it booted at idle CPU priority: the
 * switch helper raises the rest of the JVM to normal and these only this far (docs/benchmarks.md).
 */
export const JIT_NICE = 10;

/**
 * The most warm-up requests a rollback sends (unless its --warmup-requests asks for more): it is
 * the way out of a bad release, so it should serve within about a second of its health check
 * even when warmupRequests is set high for deploys (docs/benchmarks.md).
 */
export const ROLLBACK_WARMUP_REQUESTS = 500;

/** iptables refuses chain names longer than 28 characters. */
export const IPTABLES_CHAIN_MAX = 28;

/**
 * The per-environment nat chain holding the one REDIRECT rule. `CZD-<id>` when
 * that fits; otherwise a prefix plus a short hash, so two long ids that share
 * a prefix never end up in the same chain.
 */
export function switchChain(id: string): string {
    const plain = `CZD-${id}`;
    if (plain.length <= IPTABLES_CHAIN_MAX) return plain;
    const hash = createHash("sha256").update(id).digest("hex").slice(0, 6);
    return `${plain.slice(0, IPTABLES_CHAIN_MAX - hash.length - 1)}-${hash}`;
}

/** sudoers Cmnd_Alias names: upper case letters, digits and underscores. */
export function sudoersAlias(id: string): string {
    return `CZD_SWITCH_${id.toUpperCase().replace(/[^A-Z0-9_]/g, "_")}`;
}

const SAFE_ID = /^[a-z0-9][a-z0-9_-]*$/;
const SAFE_USER = /^[a-z_][a-z0-9_-]*$/;
const SAFE_PATH = /^\/[A-Za-z0-9._\/-]+$/;
const SAFE_DOMAIN = /^[A-Za-z0-9.-]+$/;

function check(ok: boolean, what: string): void {
    if (!ok) throw new Error(`rotation: invalid ${what}`);
}

function checkPort(p: number, what: string): void {
    check(Number.isInteger(p) && p > 0 && p < 65536, `${what} ${p}`);
}

function checkSeconds(n: number, what: string, min: number): void {
    check(Number.isInteger(n) && n >= min && n <= 86400, `${what} ${n} (integer seconds >= ${min})`);
}

/** Every value interpolated into a shell script, sudoers or unit file passes through here first. */
export function validateRotationInput(layout: EnvironmentLayout, settings: RotationSettings): void {
    check(SAFE_ID.test(layout.id), `environment id ${JSON.stringify(layout.id)}`);
    check(SAFE_ID.test(layout.environment), `environment ${JSON.stringify(layout.environment)}`);
    check(SAFE_USER.test(layout.deployUser), `deploy user ${JSON.stringify(layout.deployUser)}`);
    check(SAFE_USER.test(layout.appUser), `app user ${JSON.stringify(layout.appUser)}`);
    for (const [k, v] of Object.entries({
        baseDir: layout.baseDir,
        releasesDir: layout.releasesDir,
        stateDir: layout.stateDir,
        slotsDir: layout.slotsDir,
        repoDir: layout.repoDir,
        lockFile: layout.lockFile,
        historyFile: layout.historyFile,
        deployScript: layout.deployScript,
        supervisorSocket: SUPERVISOR_SOCKET,
        switchHelper: layout.switchHelper,
    })) {
        check(SAFE_PATH.test(v) && !v.split("/").includes(".."), `${k} ${JSON.stringify(v)}`);
    }
    for (const [k, v] of Object.entries(layout.stateFiles)) {
        check(SAFE_ID.test(v), `state file name ${k} ${JSON.stringify(v)}`);
    }
    checkPort(layout.ports.proxy, "proxy port");
    check(layout.programs.length === 2, "programs (exactly two slots)");
    for (const p of layout.programs) {
        check(SAFE_ID.test(p.name), `program name ${JSON.stringify(p.name)}`);
        check(SAFE_PATH.test(p.log), `log path ${JSON.stringify(p.log)}`);
        check(SAFE_PATH.test(p.bootFlag), `boot flag path ${JSON.stringify(p.bootFlag)}`);
        check(SAFE_PATH.test(p.settingsRequest), `settings request path ${JSON.stringify(p.settingsRequest)}`);
        checkPort(p.port, `slot ${p.slot} port`);
        check(p.port !== layout.ports.proxy, `slot ${p.slot} port equals the proxy port`);
    }
    check(layout.programs[0].port !== layout.programs[1].port, "slot ports (must differ)");
    check(SAFE_DOMAIN.test(settings.domain), `domain ${JSON.stringify(settings.domain)}`);
    check(URL_PATH.test(settings.healthPath), `healthPath ${JSON.stringify(settings.healthPath)}`);
    check(URL_PATH.test(settings.warmupPath), `warmupPath ${JSON.stringify(settings.warmupPath)}`);
    check(Number.isInteger(settings.warmupRequests) && settings.warmupRequests >= 0 && settings.warmupRequests <= WARMUP_REQUESTS_MAX,
        `warmupRequests ${settings.warmupRequests} (integer 0..${WARMUP_REQUESTS_MAX})`);
    check(Number.isInteger(settings.rampSeconds) && settings.rampSeconds >= 0 && settings.rampSeconds <= RAMP_SECONDS_MAX,
        `rampSeconds ${settings.rampSeconds} (integer 0..${RAMP_SECONDS_MAX})`);
    check(Number.isInteger(settings.rampMaxErrorPercent) && settings.rampMaxErrorPercent >= 0 && settings.rampMaxErrorPercent <= 100,
        `rampMaxErrorPercent ${settings.rampMaxErrorPercent} (integer 0..100)`);
    check(Number.isInteger(settings.bakeSeconds) && settings.bakeSeconds >= 0 && settings.bakeSeconds <= BAKE_SECONDS_MAX,
        `bakeSeconds ${settings.bakeSeconds} (integer 0..${BAKE_SECONDS_MAX})`);
    check(JAVA_OPTS_ALLOWED.test(settings.javaOpts), `javaOpts ${JSON.stringify(settings.javaOpts)}`);
    check((BOOT_PRIORITIES as readonly string[]).includes(settings.bootPriority), `bootPriority ${JSON.stringify(settings.bootPriority)} (one of ${BOOT_PRIORITIES.join(", ")})`);
    checkSeconds(settings.startTimeoutSeconds, "startTimeoutSeconds", 1);
    checkSeconds(settings.drainTimeoutSeconds, "drainTimeoutSeconds", 0);
    checkSeconds(settings.lockTimeoutSeconds, "lockTimeoutSeconds", 0);
    check(Number.isInteger(settings.keepReleases) && settings.keepReleases >= 2 && settings.keepReleases <= 100,
        `keepReleases ${settings.keepReleases} (integer 2..100)`);
}

/** What the switch helper needs to know about one environment. */
export function switchEnvironmentView(layout: EnvironmentLayout) {
    return {
        id: layout.id,
        chain: switchChain(layout.id),
        proxyPort: layout.ports.proxy,
        slot1Port: slotProgram(layout, 1).port,
        slot2Port: slotProgram(layout, 2).port,
    };
}

/** The view every rotation template is rendered with. */
export function rotationView(layout: EnvironmentLayout, settings: RotationSettings) {
    validateRotationInput(layout, settings);
    const s1 = slotProgram(layout, 1);
    const s2 = slotProgram(layout, 2);
    return {
        // Paths and names as the layout decided them (baseDir, releasesDir, stateDir, lockFile, ...).
        ...layout,
        releaseJar: RELEASE_JAR,
        supervisorSocket: SUPERVISOR_SOCKET,
        supervisorStartSeconds: SUPERVISOR_START_SECONDS,
        sudoersAlias: sudoersAlias(layout.id),
        proxyPort: layout.ports.proxy,
        /** supervisorctl names a program of a group `<group>:<program>`; the group is the environment id. */
        supervisorGroup: layout.id,
        slot1Program: `${layout.id}:${s1.name}`,
        slot1Port: s1.port,
        slot1Log: s1.log,
        slot1BootFlag: s1.bootFlag,
        slot1SettingsRequest: s1.settingsRequest,
        slot2Program: `${layout.id}:${s2.name}`,
        slot2Port: s2.port,
        slot2Log: s2.log,
        slot2BootFlag: s2.bootFlag,
        slot2SettingsRequest: s2.settingsRequest,
        /** The state records' file names in stateDir. */
        liveSlotFile: layout.stateFiles.liveSlot,
        liveRevisionFile: layout.stateFiles.liveRevision,
        previousRevisionFile: layout.stateFiles.previousRevision,
        configCommitFile: layout.stateFiles.configCommit,
        domain: settings.domain,
        healthPath: settings.healthPath,
        startTimeoutSeconds: settings.startTimeoutSeconds,
        drainTimeoutSeconds: settings.drainTimeoutSeconds,
        keepReleases: settings.keepReleases,
        lockTimeoutSeconds: settings.lockTimeoutSeconds,
        javaOpts: settings.javaOpts,
        bootPriority: settings.bootPriority,
        warmupRequests: settings.warmupRequests,
        warmupPath: settings.warmupPath,
        warmupRequestsMax: WARMUP_REQUESTS_MAX,
        rollbackWarmupRequests: ROLLBACK_WARMUP_REQUESTS,
        rampSeconds: settings.rampSeconds,
        rampSecondsMax: RAMP_SECONDS_MAX,
        rampMaxErrorPercent: settings.rampMaxErrorPercent,
        rampErrorMinResponses: RAMP_ERROR_MIN_RESPONSES,
        answersWindowSeconds: ANSWERS_WINDOW_SECONDS,
        healthRequestTimeout: HEALTH_REQUEST_TIMEOUT_SECONDS,
        bakeSeconds: settings.bakeSeconds,
        bakeSecondsMax: BAKE_SECONDS_MAX,
        /** The sudoers forms of the ramp: one per slot and share. */
        rampSteps: RAMP_STEPS,
        rampForms: ([1, 2] as const).flatMap(slot => RAMP_STEPS_PERCENT.map(percent => ({ slot, percent }))),
        /** Supervisor wait (60 s) + start + gate + margin, for the boot unit. */
        bootTimeoutSeconds: settings.startTimeoutSeconds + 120,
    };
}

/**
 * The environment's own switch helper (installed at layout.switchHelper). It
 * still takes the environment id as an argument and refuses any other, so a
 * sudo rule or a typo can never move another environment's traffic.
 */
export function renderSwitchHelper(layout: EnvironmentLayout): string {
    check(SAFE_ID.test(layout.id), `environment id ${JSON.stringify(layout.id)}`);
    return render("switch-traffic.sh", {
        switchHelper: layout.switchHelper,
        environments: [switchEnvironmentView(layout)],
        rampSteps: RAMP_STEPS,
        conntrackCloseTimeout: CONNTRACK_CLOSE_TIMEOUT,
        jitNice: JIT_NICE,
    });
}

export interface RotationFiles {
    deployScript: string;
    switchHelper: string;
    sudoers: string;
    restoreUnit: string;
}

export function renderRotationFiles(layout: EnvironmentLayout, settings: RotationSettings): RotationFiles {
    const view = rotationView(layout, settings);
    return {
        deployScript: render("deploy.sh", view),
        switchHelper: renderSwitchHelper(layout),
        sudoers: render("sudoers", view),
        restoreUnit: render("restore.service", view),
    };
}
