// Pure rendering of everything the host setup installs: each setup step is one
// shell script (with the files it installs embedded) plus the hash that
// triggers it. Resources in setup.ts stay thin.
import { Settings } from "./config";
import {
    DEPLOY_USER,
    EnvironmentLayout,
    FIREWALL_SCRIPT,
    FIREWALL_UNIT,
    RELEASE_JAR,
    SSHD_DROPIN,
    SUPERVISOR_SOCKET,
    TOOL_DIR,
} from "./names";
import { contentHash, render } from "./render";
import { renderRotationFiles, RotationSettings } from "./rotation";

/** What the host needs from the distribution (Ubuntu 24.04 and Debian 12 both carry these). */
export const PACKAGES = [
    "nginx",
    "supervisor",
    "git",
    "curl",
    "ca-certificates",
    "default-jre-headless",
    "leiningen",
    "sudo",
    "iptables",
    "iproute2",
    "util-linux",
];

/** Bounds for a fresh server's first boot and for apt locks held by unattended upgrades. */
export const FIRST_BOOT_TIMEOUT_SECONDS = 600;
export const APT_LOCK_WAIT_SECONDS = 600;
export const CLIENT_MAX_BODY_SIZE = "25m";
export const SUPERVISORD_CONF = "/etc/supervisor/supervisord.conf";

export interface SetupStep {
    /** Resource name suffix and log tag. */
    name: string;
    /** The script fed to the root shell on stdin. */
    script: string;
    /** Changes exactly when the script changes. */
    hash: string;
}

function step(name: string, template: string, view: object): SetupStep {
    const script = render(template, view);
    return { name, script, hash: contentHash(script) };
}

/** The text between heredoc markers must not contain the marker itself. */
function embeddable(content: string, what: string): string {
    if (/^CZD_FILE$/m.test(content)) throw new Error(`${what} contains a line 'CZD_FILE', which ends the embedded file early`);
    return content.replace(/\n+$/, "");
}

/** Splits CIDRs by family, shell-quoted for the firewall's arrays. */
export function cidrsByFamily(cidrs: string[]): { v4: string[]; v6: string[] } {
    return {
        v4: cidrs.filter(c => !c.includes(":")),
        v6: cidrs.filter(c => c.includes(":")),
    };
}

export function renderFirewall(settings: Settings): string {
    const { v4, v6 } = cidrsByFamily(settings.sshAllowedCidrs);
    return render("firewall.sh", {
        sshPort: settings.sshPort,
        sshFromV4: v4.map(c => `'${c}'`).join(" "),
        sshFromV6: v6.map(c => `'${c}'`).join(" "),
    });
}

/** Host-wide steps, in order: first boot, packages, users and access, firewall. */
export function hostSteps(settings: Settings): SetupStep[] {
    const firewallScriptContent = renderFirewall(settings);
    return [
        step("wait-for-host", "wait-for-host.sh", { firstBootTimeout: FIRST_BOOT_TIMEOUT_SECONDS }),
        step("packages", "packages.sh", { packages: PACKAGES.join(" "), aptLockWait: APT_LOCK_WAIT_SECONDS }),
        step("host-access", "host-access.sh", {
            deployUser: DEPLOY_USER,
            authorizedKeys: embeddable(settings.sshPublicKey, "sshPublicKey"),
            supervisordConf: SUPERVISORD_CONF,
            supervisordConfContent: embeddable(render("supervisord.conf", { deployUser: DEPLOY_USER, supervisorSocket: SUPERVISOR_SOCKET }), "supervisord.conf"),
            supervisorSocket: SUPERVISOR_SOCKET,
            sshdDropin: SSHD_DROPIN,
            sshdDropinContent: embeddable(render("sshd-dropin.conf", {}), "sshd drop-in"),
        }),
        step("firewall", "firewall-step.sh", {
            toolDir: TOOL_DIR,
            firewallScript: FIREWALL_SCRIPT,
            firewallScriptContent: embeddable(firewallScriptContent, "firewall script"),
            firewallUnit: FIREWALL_UNIT,
            firewallUnitContent: embeddable(render("firewall.service", { firewallScript: FIREWALL_SCRIPT }), "firewall unit"),
        }),
    ];
}

/** The values every per-environment template shares: the layout plus the settings they need. */
export function environmentView(settings: Settings, l: EnvironmentLayout) {
    const defaultServer = settings.domain === "";
    return {
        ...l,
        releaseJar: RELEASE_JAR,
        programList: l.programs.map(p => p.name).join(","),
        deployBranch: settings.deployBranch,
        javaOpts: settings.javaOpts,
        // Supervisor's own stop waits past the drain so it never kills a request the deploy is waiting for.
        stopWaitSeconds: settings.drainTimeout + 10,
        defaultServer,
        serverName: defaultServer ? "_" : settings.domain,
        upstreamName: l.id.replace(/-/g, "_"),
        clientMaxBodySize: CLIENT_MAX_BODY_SIZE,
        proxyReadTimeout: Math.max(60, settings.drainTimeout),
    };
}

export interface EnvironmentFiles {
    runSlot: string;
    installAppEnv: string;
    supervisorGroup: string;
    nginxSite: string;
    postReceive: string;
}

export function renderEnvironmentFiles(settings: Settings, l: EnvironmentLayout): EnvironmentFiles {
    const view = environmentView(settings, l);
    return {
        runSlot: render("run-slot.sh", view),
        installAppEnv: render("install-app-env.sh", { ...view, variableCount: settings.appEnvNames.length }),
        supervisorGroup: render("supervisor-group.conf", view),
        nginxSite: render("nginx-site.conf", view),
        postReceive: render("post-receive.sh", view),
    };
}

export function rotationSettings(settings: Settings): RotationSettings {
    return {
        // The health check's Host header: the production name, or a neutral one for an address-only site.
        domain: settings.domain || "localhost",
        healthPath: settings.healthPath,
        startTimeoutSeconds: settings.startTimeout,
        drainTimeoutSeconds: settings.drainTimeout,
        keepReleases: settings.keepReleases,
        lockTimeoutSeconds: settings.lockTimeout,
        javaOpts: settings.javaOpts,
    };
}

/** The environment's setup step: app user, directories, rotation, repository, Supervisor group, nginx site. */
export function environmentStep(settings: Settings, l: EnvironmentLayout): SetupStep {
    const files = renderEnvironmentFiles(settings, l);
    const rotation = renderRotationFiles(l, rotationSettings(settings));
    return step(`env-${l.environment}`, "environment.sh", {
        ...environmentView(settings, l),
        deployScriptContent: embeddable(rotation.deployScript, "deploy script"),
        switchHelperContent: embeddable(rotation.switchHelper, "switch helper"),
        sudoersContent: embeddable(rotation.sudoers, "sudoers rule"),
        restoreUnitContent: embeddable(rotation.restoreUnit, "boot unit"),
        runSlotContent: embeddable(files.runSlot, "run-slot"),
        installAppEnvContent: embeddable(files.installAppEnv, "install-app-env"),
        postReceiveContent: embeddable(files.postReceive, "post-receive hook"),
        supervisorGroupContent: embeddable(files.supervisorGroup, "Supervisor group"),
        nginxSiteContent: embeddable(files.nginxSite, "nginx site"),
    });
}

/** The env file's content: NAME=value lines, read by run-slot without shell evaluation. */
export function appEnvFile(env: Record<string, string>): string {
    return Object.keys(env)
        .sort()
        .map(name => `${name}=${env[name]}`)
        .join("\n") + (Object.keys(env).length ? "\n" : "");
}
