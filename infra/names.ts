// The one place that decides every name on the server: users, paths, Supervisor
// programs, nginx sites and ports. Templates receive these values; they never
// spell a path themselves.

/** Accounts shared by every app and environment on one server. */
export const DEPLOY_USER = "deploy";

/** The `ssh` and `sshRoot` outputs: the command that reaches the server as `user` (`-p` unless port 22). */
export function sshCommand(user: string, address: string, port: number): string {
    return `ssh${port === 22 ? "" : ` -p ${port}`} ${user}@${address}`;
}

/** The user and port of an sshCommand (another stack's `ssh` output); port 22 and DEPLOY_USER where it names none. */
export function parseSshCommand(command: string): { user: string; port: number } {
    return {
        user: /\s([a-z_][a-z0-9_-]*)@\S+$/.exec(command)?.[1] ?? DEPLOY_USER,
        port: Number(/ -p (\d+) /.exec(command)?.[1] ?? 22),
    };
}

/** Directory for files that belong to this tool rather than to one app. */
export const TOOL_DIR = "/usr/local/lib/clj-zero-downtime";
/** The tool's own state on a server that is no one environment's (ACME webroots, the claims lock). */
export const TOOL_STATE_DIR = "/var/lib/clj-zero-downtime";
/** Host firewall script and the systemd unit that applies it at boot. */
export const FIREWALL_SCRIPT = `${TOOL_DIR}/firewall.sh`;
export const FIREWALL_UNIT = "czd-firewall.service";
/** Run by `pulumi destroy` of the stack that owns the server: refuses while other environments live on it. */
export const DESTROY_GUARD = `${TOOL_DIR}/check-other-environments`;
/** Every file this project writes for an environment starts with this marker and the environment's id. */
export const MANAGED_MARKER = "Managed by clj-zero-downtime for";
/** Supervisor's control socket, handed to the deploy user's group. */
export const SUPERVISOR_SOCKET = "/var/run/supervisor.sock";
export const SUPERVISORD_PIDFILE = "/var/run/supervisord.pid";
/**
 * A slot's `startsecs`: Supervisor calls a start failed (and retries it) when the process
 * exits sooner. The deploy does not wait for it; it waits for the gate, and afterwards
 * for Supervisor to call the new slot RUNNING.
 */
export const SUPERVISOR_START_SECONDS = 1;
/**
 * The drop-in that turns SSH password login off. sshd reads drop-ins in name order and keeps
 * the first value it sees, so 01- wins over cloud images' 50-cloud-init.conf.
 */
export const SSHD_DROPIN = "/etc/ssh/sshd_config.d/01-clj-zero-downtime.conf";
/** Turns autogroup scheduling off at boot (the scheduler step says why). */
export const SCHEDULER_SYSCTL = "/etc/sysctl.d/60-clj-zero-downtime.conf";

/**
 * certbot's deploy hooks run after every successful renewal: ours tests and reloads nginx
 * (a reload, never a restart; the deploy's NAT rule and the slots are not touched).
 */
export const CERTBOT_DEPLOY_HOOK = "/etc/letsencrypt/renewal-hooks/deploy/clj-zero-downtime-reload-nginx";
/** Where certbot keeps the current certificate of a lineage (symlinks into its archive), and its renewal settings. */
export const LETSENCRYPT_LIVE_DIR = "/etc/letsencrypt/live";
export const LETSENCRYPT_RENEWAL_DIR = "/etc/letsencrypt/renewal";
/** Per-environment directories: the webroot certbot answers HTTP-01 challenges from, and `custom` certificates. */
export const ACME_WEBROOT_DIR = `${TOOL_STATE_DIR}/acme`;
export const CUSTOM_TLS_DIR = "/etc/clj-zero-downtime/tls";
/** The URL path of HTTP-01 challenges (RFC 8555): served from the webroot, never redirected. */
export const ACME_CHALLENGE_PATH = "/.well-known/acme-challenge/";

/** Every app's directory is `<APPS_ROOT>/<app>`, its environments' `<APPS_ROOT>/<app>/<env>`. */
export const APPS_ROOT = "/srv";
const stateDirOf = (baseDir: string) => `${baseDir}/state`;
const CLAIMS_NAME = "claims";
/** The claims files of every environment on a server, as a shell glob (see EnvironmentLayout.claimsFile). */
export const ALL_CLAIMS_FILES = `${stateDirOf(`${APPS_ROOT}/*/*`)}/${CLAIMS_NAME}`;

/** Held by an environment's setup while it checks and records its claims against the others'. */
export const CLAIMS_LOCK = `${TOOL_STATE_DIR}/claims.lock`;
/** Held while a setup step adds a stack's key to the deploy user's authorized_keys. */
export const DEPLOY_KEYS_LOCK = `${TOOL_STATE_DIR}/deploy-keys.lock`;

/**
 * The records in an environment's state directory (EnvironmentLayout.stateDir), by file name;
 * the deploy script writes them (a temp file renamed over the record), `ops` reads them.
 * `liveSlot`: 1 or 2, the slot traffic goes to (the kernel rule is the truth while the
 * machine is up; this file survives reboots). `liveRevision`: the revision the live slot runs.
 * `previousRevision`: the one live before it (the --rollback target). `configCommit`: the
 * commit appRevision named at the last successful pulumi up.
 */
export const STATE_FILES = {
    liveSlot: "live-slot",
    liveRevision: "live-revision",
    previousRevision: "previous-revision",
    configCommit: "config-commit",
} as const;

/** A release directory holds the build tree and this jar, copied out of `target/`. */
export const RELEASE_JAR = "app.jar";

export type Slot = 1 | 2;
export const SLOTS: readonly Slot[] = [1, 2];

export interface Ports {
    /** Stable local port nginx proxies to; the traffic switch maps it to the live slot. */
    proxy: number;
    slot1: number;
    slot2: number;
    nrepl1: number;
    nrepl2: number;
}

/** The config key of each port, for messages that tell the user what to change. */
export const PORT_CONFIG_KEYS: Record<keyof Ports, string> = {
    proxy: "proxyPort", slot1: "slot1Port", slot2: "slot2Port", nrepl1: "nrepl1Port", nrepl2: "nrepl2Port",
};

export interface EnvironmentLayout {
    appName: string;
    environment: string;
    /** `<app>-<env>`: Supervisor group, nginx site, sudoers and lock names. */
    id: string;
    appUser: string;
    deployUser: string;
    /** `/srv/<app>`: holds one baseDir per environment of the app. */
    appDir: string;
    baseDir: string;
    releasesDir: string;
    /** Where `pulumi up` uploads the `git archive` of the revision it deploys. */
    uploadsDir: string;
    stateDir: string;
    /** The names of the records in stateDir (STATE_FILES). */
    stateFiles: typeof STATE_FILES;
    /** What the environment holds on the server that no other environment may: its ports and its server name. */
    claimsFile: string;
    binDir: string;
    repoDir: string;
    /** Mode 0600, owned by the app user: the app's environment variables (secrets included). */
    envFile: string;
    /** Root's, 0644: the configured javaOpts, one line of words. */
    javaOptsFile: string;
    /**
     * The app user's, 0700: per slot, the settings it last started with (`<n>.env`,
     * `<n>.java-opts`) and the request it took them for (`<n>.request`); see `settingsRequest`.
     */
    slotSettingsDir: string;
    lockFile: string;
    historyFile: string;
    deployScript: string;
    /**
     * Root-owned helper that switches this environment's traffic: the only thing the deploy
     * user may run as root. One per environment, so stacks sharing a server never rewrite
     * each other's helper.
     */
    switchHelper: string;
    /** systemd unit that restores the live slot after a reboot. */
    restoreUnit: string;
    /** Root-owned; removes this environment from the server (run by `pulumi destroy`). */
    teardownScript: string;
    runSlotScript: string;
    /** Root-owned; reads the app's environment on stdin and installs it as envFile. */
    installAppEnvScript: string;
    /** `slotsDir/<n>` is a symlink to the release directory the slot runs. */
    slotsDir: string;
    logDir: string;
    supervisorConf: string;
    nginxSiteAvailable: string;
    nginxSiteEnabled: string;
    sudoersFile: string;
    /** `tls: letsencrypt`: the webroot of HTTP-01 challenges and certbot's certificate name (lineage). */
    acmeWebroot: string;
    certName: string;
    letsencryptCertificate: string;
    letsencryptKey: string;
    /** certbot's settings of the lineage: the ACME server it renews from. */
    letsencryptRenewalConf: string;
    /** `tls: custom`: root-owned directory with the certificate chain (0644) and the key (0600). */
    customTlsDir: string;
    customCertificate: string;
    customKey: string;
    /** Root-owned; reads the `custom` key on stdin, checks it against the certificate, installs both. */
    installTlsScript: string;
    ports: Ports;
    /**
     * `bootFlag`: while it exists, run-slot starts the slot's JVM at idle CPU priority
     * (SCHED_IDLE). The deploy creates it before starting the idle slot and removes it
     * once that slot is live; the switch helper raises the live JVM back to normal.
     * `settingsRequest`: a deploy writes a new token there before it starts the slot, and
     * run-slot then takes the current settings (envFile, javaOptsFile); a start without a
     * new token (a reboot's restore, Supervisor restarting a crashed JVM) keeps the settings
     * the slot last started with, so a settings change whose deploy failed never reaches it.
     */
    programs: { slot: Slot; name: string; port: number; nreplPort: number; log: string; bootFlag: string; settingsRequest: string }[];
}

export function environmentId(appName: string, environment: string): string {
    return `${appName}-${environment}`;
}

export function programName(appName: string, environment: string, slot: Slot): string {
    return `${environmentId(appName, environment)}-${slot}`;
}

/** Slot n's Supervisor program in a layout (its name, ports, log and boot flag). */
export function slotProgram(layout: EnvironmentLayout, slot: Slot): EnvironmentLayout["programs"][number] {
    const p = layout.programs.find(x => x.slot === slot);
    if (!p) throw new Error(`layout ${layout.id} has no program for slot ${slot}`);
    return p;
}

export function slotPort(ports: Ports, slot: Slot): number {
    return slot === 1 ? ports.slot1 : ports.slot2;
}

export function slotNreplPort(ports: Ports, slot: Slot): number {
    return slot === 1 ? ports.nrepl1 : ports.nrepl2;
}

/**
 * The app and environment whose directory (`layout().baseDir`, `<APPS_ROOT>/<app>/<env>`) this
 * is; null for any other path, and for names with characters no app or environment name has
 * (the layout's paths go into commands run over SSH).
 */
export function environmentOfBaseDir(dir: string): { appName: string; environment: string } | null {
    const prefix = `${APPS_ROOT}/`;
    if (!dir.startsWith(prefix)) return null;
    const [appName, environment, ...rest] = dir.slice(prefix.length).split("/");
    const name = /^[a-z0-9][a-z0-9-]*$/;
    if (!name.test(appName ?? "") || !name.test(environment ?? "") || rest.length > 0) return null;
    return { appName, environment };
}

export function layout(appName: string, environment: string, ports: Ports): EnvironmentLayout {
    const id = environmentId(appName, environment);
    const appDir = `${APPS_ROOT}/${appName}`;
    const baseDir = `${appDir}/${environment}`;
    const stateDir = stateDirOf(baseDir);
    const binDir = `${baseDir}/bin`;
    const logDir = `/var/log/${appName}`;
    const slotsDir = `${baseDir}/slots`;
    return {
        appName,
        environment,
        id,
        appUser: appName,
        deployUser: DEPLOY_USER,
        appDir,
        baseDir,
        releasesDir: `${baseDir}/releases`,
        uploadsDir: `${baseDir}/uploads`,
        stateDir,
        stateFiles: STATE_FILES,
        claimsFile: `${stateDir}/${CLAIMS_NAME}`,
        binDir,
        repoDir: `${baseDir}/repo.git`,
        envFile: `${baseDir}/app.env`,
        javaOptsFile: `${baseDir}/java-opts`,
        slotSettingsDir: `${baseDir}/slot-settings`,
        lockFile: `${stateDir}/deploy.lock`,
        historyFile: `${stateDir}/history`,
        deployScript: `${binDir}/deploy`,
        switchHelper: `/usr/local/sbin/czd-switch-${id}`,
        restoreUnit: `czd-restore-${id}.service`,
        teardownScript: `${TOOL_DIR}/teardown-${id}`,
        runSlotScript: `${binDir}/run-slot`,
        installAppEnvScript: `${binDir}/install-app-env`,
        slotsDir,
        logDir,
        supervisorConf: `/etc/supervisor/conf.d/${id}.conf`,
        nginxSiteAvailable: `/etc/nginx/sites-available/${id}`,
        nginxSiteEnabled: `/etc/nginx/sites-enabled/${id}`,
        sudoersFile: `/etc/sudoers.d/${id.replace(/[^a-z0-9_]/g, "_")}`,
        acmeWebroot: `${ACME_WEBROOT_DIR}/${id}`,
        certName: id,
        letsencryptCertificate: `${LETSENCRYPT_LIVE_DIR}/${id}/fullchain.pem`,
        letsencryptKey: `${LETSENCRYPT_LIVE_DIR}/${id}/privkey.pem`,
        letsencryptRenewalConf: `${LETSENCRYPT_RENEWAL_DIR}/${id}.conf`,
        customTlsDir: `${CUSTOM_TLS_DIR}/${id}`,
        customCertificate: `${CUSTOM_TLS_DIR}/${id}/fullchain.pem`,
        customKey: `${CUSTOM_TLS_DIR}/${id}/privkey.pem`,
        installTlsScript: `${binDir}/install-tls`,
        ports,
        programs: SLOTS.map(slot => ({
            slot,
            name: programName(appName, environment, slot),
            port: slotPort(ports, slot),
            nreplPort: slotNreplPort(ports, slot),
            log: `${logDir}/${environment}-${slot}.log`,
            bootFlag: `${slotsDir}/${slot}.booting`,
            settingsRequest: `${slotsDir}/${slot}.settings-request`,
        })),
    };
}

/** The certificate and key nginx serves for a TLS mode, or undefined for `off`. */
export function tlsFiles(l: EnvironmentLayout, mode: "off" | "letsencrypt" | "custom"): { certificate: string; key: string } | undefined {
    if (mode === "letsencrypt") return { certificate: l.letsencryptCertificate, key: l.letsencryptKey };
    if (mode === "custom") return { certificate: l.customCertificate, key: l.customKey };
    return undefined;
}
