// Pure rendering of everything the host setup installs: each setup step is one
// shell script (with the files it installs embedded) plus the hash that
// triggers it. Resources in setup.ts stay thin.
import { Settings } from "./config";
import {
    ACME_CHALLENGE_PATH,
    ALL_CLAIMS_FILES,
    CLAIMS_LOCK,
    DEPLOY_KEYS_LOCK,
    CERTBOT_DEPLOY_HOOK,
    DEPLOY_USER,
    DESTROY_GUARD,
    EnvironmentLayout,
    MANAGED_MARKER,
    FIREWALL_SCRIPT,
    PORT_CONFIG_KEYS,
    Ports,
    FIREWALL_UNIT,
    RELEASE_JAR,
    SCHEDULER_SYSCTL,
    SSHD_DROPIN,
    SUPERVISOR_SOCKET,
    SUPERVISORD_PIDFILE,
    SUPERVISOR_START_SECONDS,
    tlsFiles,
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
    "procps",
];

/** Bounds for a fresh server's first boot and for apt locks held by unattended upgrades. */
export const FIRST_BOOT_TIMEOUT_SECONDS = 600;
export const APT_LOCK_WAIT_SECONDS = 600;
/** Another environment's check and record of its claims take a second; this bounds a stuck one. */
export const CLAIMS_LOCK_WAIT_SECONDS = 120;
export const CLIENT_MAX_BODY_SIZE = "25m";
export const SUPERVISORD_CONF = "/etc/supervisor/supervisord.conf";

/**
 * Installed only for `tls: letsencrypt`, by the TLS step. certbot's own webroot
 * authenticator is enough (our site serves the challenge), so the nginx plugin,
 * which would rewrite our site file, is not needed.
 */
export const CERTBOT_PACKAGES = ["certbot"];
/** Mozilla's "intermediate" TLS 1.2 suites (forward secrecy, AEAD); TLS 1.3 suites are OpenSSL's defaults. */
export const SSL_CIPHERS = [
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");
/** Two years, as hstspreload.org asks; sent only with `hsts: true`. */
export const HSTS_MAX_AGE_SECONDS = 63072000;

/** The kernel's switch for autogroup scheduling, which the scheduler step turns off. */
const AUTOGROUP_SYSCTL = "kernel.sched_autogroup_enabled";
export const AUTOGROUP_SETTING = `/proc/sys/${AUTOGROUP_SYSCTL.replace(/\./g, "/")}`;
export const SCHEDULER_SYSCTL_CONTENT = [
    "# clj-zero-downtime: CPU priorities count across sessions (a deploy boots its new slot at idle priority)",
    `${AUTOGROUP_SYSCTL} = 0`,
].join("\n");

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

/** The text between heredoc markers must not contain the marker line itself (CZD_FILE unless told). */
function embeddable(content: string, what: string, marker = "CZD_FILE"): string {
    if (new RegExp(`^${marker}$`, "m").test(content)) throw new Error(`${what} contains a line '${marker}', which ends the embedded file early`);
    return content.replace(/\n+$/, "");
}

/** A single-quoted shell word. */
export function shellQuote(value: string): string {
    return `'${value.replace(/'/g, `'\\''`)}'`;
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

/** Host-wide steps, in order: first boot, packages, kernel scheduling, users and access, firewall. */
export function hostSteps(settings: Settings): SetupStep[] {
    const firewallScriptContent = renderFirewall(settings);
    return [
        step("wait-for-host", "wait-for-host.sh", { firstBootTimeout: FIRST_BOOT_TIMEOUT_SECONDS }),
        step("packages", "packages.sh", { packages: PACKAGES.join(" "), aptLockWait: APT_LOCK_WAIT_SECONDS }),
        step("scheduler", "scheduler.sh", {
            schedulerSysctl: SCHEDULER_SYSCTL,
            schedulerSysctlContent: SCHEDULER_SYSCTL_CONTENT,
            autogroupSetting: AUTOGROUP_SETTING,
        }),
        step("host-access", "host-access.sh", {
            deployUser: DEPLOY_USER,
            // Validated as one OpenSSH key line: no quote can end the shell string early.
            authorizedKey: settings.sshPublicKey,
            deployKeysLock: DEPLOY_KEYS_LOCK,
            supervisordConf: SUPERVISORD_CONF,
            supervisordConfContent: embeddable(render("supervisord.conf", {
                deployUser: DEPLOY_USER, supervisorSocket: SUPERVISOR_SOCKET, supervisordPidfile: SUPERVISORD_PIDFILE,
            }), "supervisord.conf"),
            supervisorSocket: SUPERVISOR_SOCKET,
            supervisordPidfile: SUPERVISORD_PIDFILE,
            sshdDropin: SSHD_DROPIN,
            sshdDropinContent: embeddable(render("sshd-dropin.conf", {}), "sshd drop-in"),
            toolDir: TOOL_DIR,
            destroyGuard: DESTROY_GUARD,
            destroyGuardContent: embeddable(render("check-other-environments.sh", { destroyGuard: DESTROY_GUARD, managedMarker: MANAGED_MARKER, allClaimsFiles: ALL_CLAIMS_FILES }), "destroy guard"),
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
    const tls = tlsFiles(l, settings.tls);
    return {
        ...l,
        releaseJar: RELEASE_JAR,
        programList: l.programs.map(p => p.name).join(","),
        // Recorded on the server (in the claims) at the first setup; a later setup with other ports stops before it changes anything.
        trafficPorts: `proxy ${l.ports.proxy} slots ${l.ports.slot1} ${l.ports.slot2}`,
        trafficPortKeys: [PORT_CONFIG_KEYS.proxy, PORT_CONFIG_KEYS.slot1, PORT_CONFIG_KEYS.slot2].join(" "),
        // Recorded the same way: another stack that names the same environment stops before it overwrites it.
        ownerStack: settings.stack,
        deployBranch: settings.deployBranch,
        javaOpts: settings.javaOpts,
        // Supervisor's own stop waits past the drain so it never kills a request the deploy is waiting for.
        stopWaitSeconds: settings.drainTimeout + 10,
        supervisorStartSeconds: SUPERVISOR_START_SECONDS,
        defaultServer,
        serverName: defaultServer ? "_" : settings.domain,
        upstreamName: l.id.replace(/-/g, "_"),
        clientMaxBodySize: CLIENT_MAX_BODY_SIZE,
        proxyReadTimeout: Math.max(60, settings.drainTimeout),
        domain: settings.domain,
        tls: tls !== undefined,
        acme: settings.tls === "letsencrypt",
        custom: settings.tls === "custom",
        // The nginx site's 443 server block and redirect; renderEnvironmentFiles also renders it without them.
        https: tls !== undefined,
        sslCertificate: tls?.certificate ?? "",
        sslCertificateKey: tls?.key ?? "",
        sslCiphers: SSL_CIPHERS,
        hsts: settings.hsts,
        hstsMaxAge: HSTS_MAX_AGE_SECONDS,
        acmeChallengePath: ACME_CHALLENGE_PATH,
    };
}

export interface EnvironmentFiles {
    runSlot: string;
    installAppEnv: string;
    supervisorGroup: string;
    /** The site as it serves once set up: with TLS on, the 443 server block and HTTP redirecting to it. */
    nginxSite: string;
    /** The site before its certificate exists: HTTP only (and the ACME challenge for letsencrypt). */
    nginxSiteHttp: string;
    postReceive: string;
}

/**
 * `appGitPath`: the app's directory inside its git repository ("" at the top), from appPath:
 * a `git push` of that repository deploys that directory.
 */
export function renderEnvironmentFiles(settings: Settings, l: EnvironmentLayout, appGitPath = ""): EnvironmentFiles {
    const view = environmentView(settings, l);
    const nginxSite = render("nginx-site.conf", view);
    return {
        runSlot: render("run-slot.sh", view),
        installAppEnv: render("install-app-env.sh", { ...view, variableCount: settings.appEnvNames.length }),
        supervisorGroup: render("supervisor-group.conf", view),
        nginxSite,
        nginxSiteHttp: render("nginx-site.conf", { ...view, https: false }),
        // Quoted: any directory name of the user's is one word to the deploy.
        postReceive: render("post-receive.sh", { ...view, appGitPath: appGitPath && shellQuote(appGitPath) }),
    };
}

/** `tls: custom`: the root-owned installer that reads the key on stdin and holds the (public) certificate. */
export function renderTlsInstaller(settings: Settings, l: EnvironmentLayout): string {
    if (settings.tls !== "custom") throw new Error(`renderTlsInstaller needs tls = custom, not ${settings.tls}`);
    return render("install-tls.sh", {
        ...environmentView(settings, l),
        certificateContent: embeddable(settings.tlsCertificate, "tlsCertificate", "CZD_CERT"),
        nginxSiteContent: embeddable(render("nginx-site.conf", environmentView(settings, l)), "nginx site", "CZD_SITE"),
    });
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
        bootPriority: settings.bootPriority,
        warmupRequests: settings.warmupRequests,
        warmupPath: settings.warmupPath,
        rampSeconds: settings.rampSeconds,
        rampMaxErrorPercent: settings.rampMaxErrorPercent,
        bakeSeconds: settings.bakeSeconds,
    };
}

/**
 * What an environment holds on its server that no other environment may: its five ports and its
 * nginx server name (`_`: no domain, the default server), as `<what> <value> <config key>` lines
 * after a header that names it. The environment step records it, and before it changes anything
 * it compares every other environment's record with it, whichever stack set that one up.
 */
export function environmentClaims(settings: Settings, l: EnvironmentLayout): string {
    const ports = (Object.keys(PORT_CONFIG_KEYS) as (keyof Ports)[]).map(key => `port ${l.ports[key]} ${PORT_CONFIG_KEYS[key]}`);
    return [`# ${l.id} (stack ${settings.stack})`, ...ports, `server ${settings.domain || "_"} domain`].join("\n");
}

/** `pulumi destroy`'s script for one environment; it waits as long for a running deploy as a deploy waits for another. */
export function renderTeardown(settings: Settings, l: EnvironmentLayout): string {
    return render("teardown.sh", { ...environmentView(settings, l), lockTimeoutSeconds: settings.lockTimeout });
}

/** The environment's setup step: app user, directories, rotation, repository, Supervisor group, nginx site. */
export function environmentStep(settings: Settings, l: EnvironmentLayout, appGitPath = ""): SetupStep {
    const files = renderEnvironmentFiles(settings, l, appGitPath);
    const rotation = renderRotationFiles(l, rotationSettings(settings));
    return step(`env-${l.environment}`, "environment.sh", {
        ...environmentView(settings, l),
        deployScriptContent: embeddable(rotation.deployScript, "deploy script"),
        teardownContent: embeddable(renderTeardown(settings, l), "teardown script"),
        switchHelperContent: embeddable(rotation.switchHelper, "switch helper"),
        sudoersContent: embeddable(rotation.sudoers, "sudoers rule"),
        restoreUnitContent: embeddable(rotation.restoreUnit, "boot unit"),
        runSlotContent: embeddable(files.runSlot, "run-slot"),
        installAppEnvContent: embeddable(files.installAppEnv, "install-app-env"),
        postReceiveContent: embeddable(files.postReceive, "post-receive hook"),
        supervisorGroupContent: embeddable(files.supervisorGroup, "Supervisor group"),
        nginxSiteContent: embeddable(files.nginxSite, "nginx site"),
        nginxSiteHttpContent: embeddable(files.nginxSiteHttp, "nginx site (HTTP only)"),
        installTlsContent: settings.tls === "custom" ? embeddable(renderTlsInstaller(settings, l), "install-tls") : "",
        claims: embeddable(environmentClaims(settings, l), "claims", "CZD_CLAIMS"),
        allClaimsFiles: ALL_CLAIMS_FILES,
        claimsLock: CLAIMS_LOCK,
        authorizedKey: settings.sshPublicKey,
        deployKeysLock: DEPLOY_KEYS_LOCK,
        claimsLockWait: CLAIMS_LOCK_WAIT_SECONDS,
    });
}

/**
 * `tls: letsencrypt`: the step after the environment's that installs certbot, obtains the
 * certificate through the site's webroot and switches the site to HTTPS.
 */
export function letsencryptStep(settings: Settings, l: EnvironmentLayout): SetupStep {
    if (settings.tls !== "letsencrypt") throw new Error(`letsencryptStep needs tls = letsencrypt, not ${settings.tls}`);
    const view = environmentView(settings, l);
    return step("tls", "tls-letsencrypt.sh", {
        ...view,
        aptLockWait: APT_LOCK_WAIT_SECONDS,
        certbotPackages: CERTBOT_PACKAGES.join(" "),
        certbotDeployHook: CERTBOT_DEPLOY_HOOK,
        deployHookContent: embeddable(render("certbot-deploy-hook.sh", {}), "certbot deploy hook"),
        acmeServer: settings.acmeServer,
        acmeAccountArgs: settings.acmeEmail
            ? `--email ${shellQuote(settings.acmeEmail)} --no-eff-email`
            : "--register-unsafely-without-email",
        nginxSiteContent: embeddable(render("nginx-site.conf", view), "nginx site"),
    });
}

/** The env file's content: NAME=value lines, read by run-slot without shell evaluation. */
export function appEnvFile(env: Record<string, string>): string {
    return Object.keys(env)
        .sort()
        .map(name => `${name}=${env[name]}`)
        .join("\n") + (Object.keys(env).length ? "\n" : "");
}
