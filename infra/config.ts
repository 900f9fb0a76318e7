// Reads every configuration key once and validates it, so that a wrong value
// fails `pulumi preview` before any resource exists. `parseSettings` is pure
// (plain strings in, typed settings or a list of errors out); `readConfig`
// is the only function that touches pulumi.Config.
import * as net from "net";
import * as pulumi from "@pulumi/pulumi";
import { DEPLOY_USER, layout, Ports } from "./names";
import { inspectPrivateKey, publicKeyBlob, sha256Fingerprint } from "./providers/ssh-key";

export const PROJECT = "clj-zero-downtime";

export const PROVIDERS = ["digitalocean", "hetzner", "existing"] as const;
export type ProviderName = (typeof PROVIDERS)[number];

/** Friendly image names mapped to each cloud's slug; any other value is passed through as a slug. */
export const IMAGES: Record<string, Record<"digitalocean" | "hetzner", string>> = {
    "ubuntu-24.04": { digitalocean: "ubuntu-24-04-x64", hetzner: "ubuntu-24.04" },
    "debian-12": { digitalocean: "debian-12-x64", hetzner: "debian-12" },
};

/** Defaults that hold two app JVMs plus a `lein uberjar` build (4 GB, 2 vCPU). */
export const CLOUD_DEFAULTS = {
    digitalocean: { region: "fra1", size: "s-2vcpu-4gb" },
    hetzner: { region: "fsn1", size: "cx23" },
} as const;

/**
 * What the other cloud calls its places and sizes: a value of one cloud set for the other (a
 * provider change that kept region and size) would fail late, in the cloud's API, after the
 * SSH key and the firewall exist. Only values known to be the other cloud's are refused.
 */
const DIGITALOCEAN_REGIONS = ["nyc1", "nyc2", "nyc3", "ams2", "ams3", "sfo1", "sfo2", "sfo3", "sgp1", "lon1", "fra1", "tor1", "blr1", "syd1", "atl1", "ric1"];
const HETZNER_LOCATIONS = ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"];
/** DigitalOcean size slugs have dashes (s-2vcpu-4gb); Hetzner server types do not (cx23, cpx21, cax11, ccx13). */
const DIGITALOCEAN_SIZE = /-/;
const HETZNER_TYPE = /^c[a-z]*x\d+$/;

/** The other cloud's name, when a region or size is one of its known values. */
export function otherCloudsValue(provider: "digitalocean" | "hetzner", key: "region" | "size", value: string): string | undefined {
    if (provider === "hetzner") {
        if (key === "region" ? DIGITALOCEAN_REGIONS.includes(value) : DIGITALOCEAN_SIZE.test(value)) return "DigitalOcean";
    } else if (key === "region" ? HETZNER_LOCATIONS.includes(value) : HETZNER_TYPE.test(value)) {
        return "Hetzner";
    }
    return undefined;
}

/** Hetzner types that are deprecated or too small for two JVMs and a build. */
export const HETZNER_REJECTED_TYPES: Record<string, string> = {
    cx22: "deprecated by Hetzner",
    cpx11: "deprecated by Hetzner",
    cx11: "deprecated by Hetzner",
};

/** Every scalar key with its default; Pulumi.yaml declares the same keys (a unit test keeps them equal). */
export const DEFAULTS = {
    provider: "digitalocean",
    region: "",
    size: "",
    image: "ubuntu-24.04",
    sshPublicKey: "",
    sshAllowedCidrs: ["0.0.0.0/0", "::/0"],
    host: "",
    sshUser: "root",
    sshPort: 22,
    appName: "sample-app",
    environment: "",
    domain: "",
    proxyPort: 3000,
    slot1Port: 3001,
    slot2Port: 3002,
    nrepl1Port: 7001,
    nrepl2Port: 7002,
    healthPath: "/health",
    startTimeout: 90,
    drainTimeout: 30,
    lockTimeout: 600,
    keepReleases: 5,
    javaOpts: "",
    bootPriority: "idle",
    warmupRequests: 500,
    warmupPath: "",
    rampSeconds: 3,
    rampMaxErrorPercent: 5,
    bakeSeconds: 0,
    appPath: "sample-app",
    appRevision: "HEAD",
    deployBranch: "main",
    build: "server",
    tls: "off",
    acmeEmail: "",
    acmeServer: "https://acme-v02.api.letsencrypt.org/directory",
    hsts: false,
    tlsCertificate: "",
    dnsZone: "",
    serverStack: "",
};

export type ScalarKey = keyof typeof DEFAULTS;
export const SCALAR_KEYS = Object.keys(DEFAULTS) as ScalarKey[];
/** Keys that Pulumi.yaml cannot declare: documented in the README instead. */
/** Secret keys. Pulumi.yaml declares the required one; an optional secret cannot be declared there (no default). */
export const SECRET_KEYS = ["sshPrivateKey", "tlsKey"] as const;
export const DECLARED_SECRET_KEYS = ["sshPrivateKey"] as const;
export const BUILD_MODES = ["server", "local"] as const;
export const BOOT_PRIORITIES = ["idle", "normal"] as const;
export const WARMUP_REQUESTS_MAX = 10000;
export const RAMP_SECONDS_MAX = 60;
/** The longest a deploy keeps the old slot up after the switch (it holds the deploy lock meanwhile). */
export const BAKE_SECONDS_MAX = 300;
/**
 * A deploy's traffic ramp: the shares (percent of new requests) the new slot gets,
 * each for rampSeconds / RAMP_STEPS_PERCENT.length, before it gets all of them.
 */
export const RAMP_STEPS_PERCENT = [10, 30, 60] as const;
/**
 * The fewest answers the new slot must have given during a ramp before its share of 5xx answers
 * is compared with the old slot's (rampMaxErrorPercent): fewer say too little either way.
 */
export const RAMP_ERROR_MIN_RESPONSES = 20;
/**
 * The ramp and the bake compare the new slot's 5xx share with the old slot's since it first got
 * traffic and also over the last this many seconds, so that a failure that begins late in a long
 * bake is not diluted by the good answers before it.
 */
export const ANSWERS_WINDOW_SECONDS = 10;
/**
 * The longest one health check of a slot may take before it counts as a miss (seconds). A ramp
 * (its steps end on its own clock) or a bake ends at its first poll past its time, so each may
 * run over by up to this much.
 */
export const HEALTH_REQUEST_TIMEOUT_SECONDS = 2;
export const TLS_MODES = ["off", "letsencrypt", "custom"] as const;
export const STRUCTURED_KEYS = ["appEnv"] as const;

export interface Settings {
    provider: ProviderName;
    /** DigitalOcean region or Hetzner location (empty for `existing`). */
    region: string;
    /** DigitalOcean size slug or Hetzner server type (empty for `existing`). */
    size: string;
    /** The cloud's image slug (empty for `existing`). */
    image: string;
    sshPublicKey: string;
    sshAllowedCidrs: string[];
    /** Address of an `existing` host; cloud hosts get theirs from the provider. */
    host: string;
    /** User the host setup connects as (root on the clouds). */
    sshUser: string;
    sshPort: number;
    appName: string;
    environment: string;
    /** The Pulumi stack this configuration belongs to: the environment's owner on the server. */
    stack: string;
    domain: string;
    ports: Ports;
    healthPath: string;
    startTimeout: number;
    drainTimeout: number;
    lockTimeout: number;
    keepReleases: number;
    javaOpts: string;
    /** `idle`: a deploy's new slot boots at idle CPU priority (SCHED_IDLE) until it is live, then its JIT at nice 10; `normal`: at the live slot's. */
    bootPriority: (typeof BOOT_PRIORITIES)[number];
    /** GETs of warmupPath sent to a deploy's new slot after its health check, before the switch (0: none; a rollback: at most ROLLBACK_WARMUP_REQUESTS). */
    warmupRequests: number;
    /** The warm-up requests' path (the health path when the config leaves it empty). */
    warmupPath: string;
    /** Seconds over which a deploy moves new requests to the new slot in RAMP_STEPS_PERCENT steps (0: all at once). */
    rampSeconds: number;
    /** Percentage points by which the new slot's share of 5xx answers during the ramp (and a bake) may exceed the old slot's before the deploy fails (100: never). */
    rampMaxErrorPercent: number;
    /** Seconds after the switch for which the old slot stays up, drained, while the new one serves all traffic: traffic goes back to it if the new one fails then (0: stop it once drained). */
    bakeSeconds: number;
    /** Names of the app's environment variables (their values are always treated as secret). */
    appEnvNames: string[];
    appPath: string;
    appRevision: string;
    deployBranch: string;
    /** `server`: lein uberjar runs on the server (the seed's way); `local`: on the machine running Pulumi, only the jar is uploaded. */
    build: (typeof BUILD_MODES)[number];
    tls: (typeof TLS_MODES)[number];
    acmeEmail: string;
    acmeServer: string;
    hsts: boolean;
    /** PEM certificate chain for `tls: custom` (public). The key is a secret, read separately. */
    tlsCertificate: string;
    /** DigitalOcean DNS zone in which to create the domain's A/AAAA records. */
    dnsZone: string;
    /** The stack that owns the server this environment shares (its `serverAddress` output); "" when this stack owns its server. */
    serverStack: string;
}

/** Raw values as Pulumi stores them: strings (numbers and lists as text), undefined when unset. */
export type RawConfig = Partial<Record<ScalarKey | "sshPrivateKey" | "tlsKey" | "appEnv", string>>;

export class ConfigError extends Error {
    constructor(readonly problems: string[]) {
        super(`invalid configuration (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n  - ${problems.join("\n  - ")}`);
        this.name = "ConfigError";
    }
}

const SLUG = /^[a-z][a-z0-9-]{0,22}[a-z0-9]$/;
const SLUG_RULE = "lowercase letters, digits and '-', starting with a letter, not ending with '-', 2-24 characters";
/** Names that must not become the app's system user. */
const RESERVED_NAMES = new Set(["root", DEPLOY_USER, "daemon", "bin", "sys", "nobody", "www-data", "nginx", "sshd", "backup", "mail", "admin", "ubuntu", "debian"]);
/**
 * A URL path with an optional query, for the health check and the warm-up. The deploy
 * script holds it in a double-quoted string, so nothing the shell would expand.
 */
export const URL_PATH = /^\/[A-Za-z0-9._~\/?=&%-]*$/;
const URL_PATH_RULE = "a URL path starting with '/' of letters, digits and . _ ~ / ? = & % -";
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Set by the deploy itself; the app's own config must not override them. */
const RESERVED_ENV = new Set(["PORT", "NREPL_PORT", "APP_REVISION", "JAVA_OPTS"]);
const HOSTNAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
const CLOUD_SLUG = /^[a-z0-9][a-z0-9.-]{0,62}$/;
const PORT_KEYS = ["proxyPort", "slot1Port", "slot2Port", "nrepl1Port", "nrepl2Port"] as const;

function show(value: unknown): string {
    return JSON.stringify(value);
}

/** Validates an IPv4 or IPv6 CIDR such as `203.0.113.0/24` or `::/0`; returns a reason or undefined. */
export function cidrProblem(cidr: string): string | undefined {
    const m = /^([^/]+)\/(\d{1,3})$/.exec(cidr);
    if (!m) return "expected <address>/<prefix length>";
    const family = net.isIP(m[1]);
    if (family === 0) return `"${m[1]}" is not an IPv4 or IPv6 address`;
    const max = family === 4 ? 32 : 128;
    const bits = Number(m[2]);
    if (bits > max) return `prefix length ${bits} is larger than ${max}`;
    return undefined;
}

/**
 * Turns raw config into settings, or throws one ConfigError listing every problem:
 * each names the key, the bad value and what is allowed.
 */
/**
 * javaOpts are words on the slot's java command line (split by the shell on purpose), so only
 * characters the shell takes literally: no quotes, globs (`*`), parentheses or expansions.
 */
export const JAVA_OPTS_ALLOWED = /^[A-Za-z0-9 ._:=+,\/%@-]*$/;
export const JAVA_OPTS_ALLOWED_TEXT = "JVM options separated by spaces, made of letters, digits and . _ : = + , / % @ - only (no quotes, '*', '$', parentheses or other shell characters)";

/**
 * `secretKeys`: the keys of `raw` whose values Pulumi holds as secrets (readConfig passes the
 * stack's); omitted, every key of SECRET_KEYS counts as one (settings built from literals).
 */
export function parseSettings(raw: RawConfig, stack: string, secretKeys: readonly string[] = SECRET_KEYS): Settings {
    const problems: string[] = [];
    const bad = (key: string, value: unknown, allowed: string) =>
        problems.push(`${PROJECT}:${key} = ${show(value)} is not valid: ${allowed}`);
    // How to set a key, for messages: with the project's wrapper, for this stack; a secret on stdin, never on the command line.
    // `value` of a secret is the file it is read from; `path`: key is a path into a list or object (`'appEnv.NAME'`).
    const setWith = (key: string, value: string, secret = false, path = false) =>
        `\`scripts/pulumi config set ${secret ? "--secret " : ""}${path ? "--path " : ""}${key} --stack ${stack} ${secret ? `-- < ${value}` : value}\``;
    const missing = (key: string, why: string) =>
        problems.push(`${PROJECT}:${key} is required ${why}; set it with ` +
            (key === "sshPrivateKey" ? setWith(key, "~/.ssh/id_ed25519", true) : setWith(key, "<value>")));

    const text = (key: ScalarKey): string => {
        const v = raw[key];
        return v === undefined ? String(DEFAULTS[key]) : v.trim();
    };
    const integer = (key: ScalarKey, min: number, max: number, rule: string): number => {
        const v = text(key);
        const n = Number(v);
        if (!/^-?\d+$/.test(v) || n < min || n > max) {
            bad(key, v, rule);
            return Number(DEFAULTS[key]);
        }
        return n;
    };

    const providerText = text("provider");
    const provider = (PROVIDERS as readonly string[]).includes(providerText) ? (providerText as ProviderName) : undefined;
    if (!provider) bad("provider", providerText, `one of ${PROVIDERS.join(", ")}`);

    // Cloud placement: region, size, image.
    let region = "";
    let size = "";
    let image = "";
    if (provider === "digitalocean" || provider === "hetzner") {
        region = text("region") || CLOUD_DEFAULTS[provider].region;
        size = text("size") || CLOUD_DEFAULTS[provider].size;
        const what = provider === "hetzner" ? { region: "location", size: "server type" } : { region: "region", size: "size slug" };
        if (!CLOUD_SLUG.test(region)) bad("region", region, `a ${provider} ${what.region} slug such as ${CLOUD_DEFAULTS[provider].region}`);
        if (!CLOUD_SLUG.test(size)) bad("size", size, `a ${provider} ${what.size} such as ${CLOUD_DEFAULTS[provider].size}`);
        for (const [key, value] of [["region", region], ["size", size]] as const) {
            const other = otherCloudsValue(provider, key, value);
            if (other) {
                bad(key, value, `a ${provider} ${what[key]} such as ${CLOUD_DEFAULTS[provider][key]}: ${value} is ${other}'s ` +
                    `(after a change of provider, \`scripts/pulumi config rm ${key} --stack ${stack}\` takes ${provider}'s default)`);
            }
        }
        if (provider === "hetzner" && HETZNER_REJECTED_TYPES[size]) {
            bad("size", size, `Hetzner server type ${size} is ${HETZNER_REJECTED_TYPES[size]}; use ${CLOUD_DEFAULTS.hetzner.size} or larger (2 GB RAM or more)`);
        }
        const imageName = text("image");
        if (!CLOUD_SLUG.test(imageName)) {
            bad("image", imageName, `${Object.keys(IMAGES).join(" or ")}, or a ${provider} image slug`);
        }
        image = IMAGES[imageName]?.[provider] ?? imageName;
    }

    // SSH access.
    const sshPublicKey = text("sshPublicKey");
    const publicKeyLine = /^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( [^\n'\\]*)?$/.test(sshPublicKey);
    if (!sshPublicKey) {
        missing("sshPublicKey", "for every provider (it is authorized for root on new servers and for the deploy user)");
    } else if (!publicKeyLine) {
        bad("sshPublicKey", sshPublicKey.slice(0, 40) + (sshPublicKey.length > 40 ? "..." : ""), "one OpenSSH public key line (ssh-ed25519, ssh-rsa or ecdsa-sha2-*), with a comment free of quotes and backslashes");
    }
    if (raw.sshPrivateKey === undefined || raw.sshPrivateKey.trim() === "") {
        missing("sshPrivateKey", "for every provider (Pulumi connects over SSH with it); store it as a secret");
    } else if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(raw.sshPrivateKey)) {
        // Never echo the value: it is a secret.
        problems.push(`${PROJECT}:sshPrivateKey is not valid: expected a PEM/OpenSSH private key ("-----BEGIN ... PRIVATE KEY-----"); the value is not shown because it is secret`);
    } else {
        // Found now, not at the first SSH step after the cloud server (money) exists. Never echo the value.
        const key = inspectPrivateKey(raw.sshPrivateKey);
        if (key.encrypted) {
            problems.push(`${PROJECT}:sshPrivateKey is passphrase-protected: this project's SSH connections use the key alone (nothing can type the passphrase), so it needs a key without one. ` +
                `Make a dedicated one with \`ssh-keygen -t ed25519 -N '' -f ~/.ssh/clj-zero-downtime\` and set both halves ` +
                `(${setWith("sshPublicKey", "\"$(cat ~/.ssh/clj-zero-downtime.pub)\"")} and ${setWith("sshPrivateKey", "~/.ssh/clj-zero-downtime", true)}), ` +
                `or remove the passphrase with \`ssh-keygen -p -f <key file>\` and set the key again; the value is not shown because it is secret`);
        } else if (key.damaged) {
            problems.push(`${PROJECT}:sshPrivateKey is not valid: its OpenSSH key data ends early (a truncated copy?); set it again from the key file with ` +
                `${setWith("sshPrivateKey", "~/.ssh/id_ed25519", true)}; the value is not shown because it is secret`);
        } else if (key.publicKeys && publicKeyLine) {
            const publicBlob = publicKeyBlob(sshPublicKey);
            if (!key.publicKeys.some(b => b.equals(publicBlob))) {
                problems.push(`${PROJECT}:sshPrivateKey does not belong to sshPublicKey: the private key's public half is ${sha256Fingerprint(key.publicKeys[0])}, ` +
                    `sshPublicKey is ${sha256Fingerprint(publicBlob)} (\`ssh-keygen -l -f <file>\` shows a key file's); set both from the same key pair ` +
                    `(the value of sshPrivateKey is not shown because it is secret)`);
            }
        }
    }

    let sshAllowedCidrs: string[] = [...DEFAULTS.sshAllowedCidrs];
    if (raw.sshAllowedCidrs !== undefined) {
        let parsed: unknown;
        try {
            parsed = JSON.parse(raw.sshAllowedCidrs);
        } catch {
            parsed = raw.sshAllowedCidrs.split(",").map(s => s.trim()).filter(Boolean);
        }
        if (!Array.isArray(parsed) || parsed.length === 0 || parsed.some(c => typeof c !== "string")) {
            bad("sshAllowedCidrs", raw.sshAllowedCidrs, `a non-empty list of CIDRs, e.g. ["203.0.113.7/32"], set one per index with ${setWith("'sshAllowedCidrs[0]'", "203.0.113.7/32", false, true)}`);
        } else {
            sshAllowedCidrs = parsed as string[];
            for (const c of sshAllowedCidrs) {
                const why = cidrProblem(c);
                if (why) bad("sshAllowedCidrs", c, `a CIDR such as 203.0.113.7/32 or 2001:db8::/32 (${why})`);
            }
        }
    }

    const host = text("host");
    const sshUser = text("sshUser");
    const serverStack = text("serverStack");
    if (serverStack) {
        if (!/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+){0,2}$/.test(serverStack)) bad("serverStack", serverStack, "a stack name such as live, or org/project/stack");
        if (provider !== "existing") bad("serverStack", serverStack, `empty unless provider is existing (this stack would otherwise create a server of its own with ${provider})`);
        if (host) bad("host", host, `empty when serverStack is set (the address comes from stack ${serverStack})`);
    }
    if (provider === "existing" && !serverStack) {
        if (!host) missing("host", "when provider is existing (the server's address), unless serverStack names the stack whose server to share");
        else if (net.isIP(host) === 0 && !HOSTNAME.test(host)) bad("host", host, "an IPv4/IPv6 address or a DNS name");
    }
    if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(sshUser)) bad("sshUser", sshUser, "a Unix user name");
    // The setup makes the deploy user its own (no password, the releases' owner, one sudo rule):
    // an admin of that name would lose its password login and be mixed up with the deploys.
    else if (provider === "existing" && sshUser === DEPLOY_USER) {
        bad("sshUser", sshUser, `a user other than ${DEPLOY_USER}: the setup makes ${DEPLOY_USER} the unprivileged user that runs the deploys (its password removed, so only keys log in); connect as root or another user with passwordless sudo`);
    }
    // The clouds' servers are set up as root, whatever sshUser says.
    const setupUser = provider === "existing" ? sshUser : "root";
    const sshPort = integer("sshPort", 1, 65535, "a port number from 1 to 65535");
    // The setup never moves sshd: a new server's listens on 22, and a cloud firewall open on another port locks us out.
    if (provider !== "existing" && sshPort !== 22) bad("sshPort", sshPort, `22 with provider ${provider} (a new server's sshd listens on 22; another port is for provider existing)`);

    // The app and its environment.
    const appName = text("appName");
    if (!SLUG.test(appName)) bad("appName", appName, `a safe slug (it becomes file, user and Supervisor program names): ${SLUG_RULE}`);
    else if (RESERVED_NAMES.has(appName)) bad("appName", appName, `a name that is not a system account (${[...RESERVED_NAMES].join(", ")} are reserved)`);
    const environment = text("environment") || stack;
    if (!SLUG.test(environment)) bad("environment", environment, `a safe slug (defaults to the stack name): ${SLUG_RULE}`);

    const domain = text("domain").toLowerCase();
    if (domain && (!HOSTNAME.test(domain) || !domain.includes("."))) bad("domain", domain, "a fully qualified DNS name such as app.example.com, or empty to answer on the server's address");

    const portValues = PORT_KEYS.map(k => integer(k, 1024, 65535, "a port from 1024 to 65535"));
    const seen = new Map<number, string>();
    PORT_KEYS.forEach((k, i) => {
        const other = seen.get(portValues[i]);
        if (other) bad(k, portValues[i], `a port distinct from the other four; ${other} is ${portValues[i]} too`);
        else seen.set(portValues[i], k);
    });
    const [proxy, slot1, slot2, nrepl1, nrepl2] = portValues;

    // The app's system user is named after appName; on an existing server the setup adopts a
    // user of that name that exists (locks it, takes its login shell): never the one it connects as.
    if (SLUG.test(appName) && !RESERVED_NAMES.has(appName)) {
        const appUser = layout(appName, environment, { proxy, slot1, slot2, nrepl1, nrepl2 }).appUser;
        if (appUser === setupUser) {
            bad("appName", appName, `a name other than ${PROJECT}:sshUser (${show(setupUser)}): the app's system user is named ${appUser} after appName, ` +
                `and the setup would take over the account it connects as (lock it and set its shell to nologin), locking you out; ` +
                `choose another appName, or connect as another sshUser`);
        }
    }

    const healthPath = text("healthPath");
    if (!URL_PATH.test(healthPath)) bad("healthPath", healthPath, `${URL_PATH_RULE}, e.g. /health`);

    const startTimeout = integer("startTimeout", 1, 3600, "a whole number of seconds from 1 to 3600");
    const drainTimeout = integer("drainTimeout", 1, 3600, "a whole number of seconds from 1 to 3600");
    const lockTimeout = integer("lockTimeout", 1, 86400, "a whole number of seconds from 1 to 86400");
    const keepReleases = integer("keepReleases", 2, 100, "a whole number from 2 to 100 (the live and the previous release are always kept)");

    const javaOpts = text("javaOpts");
    if (!JAVA_OPTS_ALLOWED.test(javaOpts)) bad("javaOpts", javaOpts, JAVA_OPTS_ALLOWED_TEXT);

    let appEnvNames: string[] = [];
    if (raw.appEnv !== undefined && raw.appEnv.trim() !== "") {
        let parsed: unknown;
        try {
            parsed = JSON.parse(raw.appEnv);
        } catch {
            parsed = undefined;
        }
        if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
            problems.push(`${PROJECT}:appEnv is not valid: an object of NAME: value pairs (set with ${setWith("'appEnv.NAME'", "value", false, true)}; a secret with ${setWith("'appEnv.NAME'", "file", true, true)})`);
        } else {
            for (const [name, value] of Object.entries(parsed as Record<string, unknown>)) {
                if (!ENV_NAME.test(name)) problems.push(`${PROJECT}:appEnv has an invalid variable name ${show(name)}: letters, digits and '_', not starting with a digit`);
                else if (RESERVED_ENV.has(name)) problems.push(`${PROJECT}:appEnv sets ${name}, which the deploy sets itself (reserved: ${[...RESERVED_ENV].join(", ")})`);
                else if (typeof value !== "string" && typeof value !== "number" && typeof value !== "boolean") problems.push(`${PROJECT}:appEnv.${name} is not valid: a string, number or boolean`);
                else if (String(value).includes("\n") || String(value).includes("\0")) problems.push(`${PROJECT}:appEnv.${name} is not valid: a single line (the value is not shown in case it is secret)`);
                else appEnvNames.push(name);
            }
            appEnvNames = appEnvNames.sort();
        }
    }

    const appPath = text("appPath");
    if (!appPath) missing("appPath", "(the path of the app's git repository)");
    const appRevision = text("appRevision");
    if (!/^[A-Za-z0-9._/~^-]+$/.test(appRevision)) bad("appRevision", appRevision, "a git revision: a commit, tag or branch name (default HEAD)");
    const deployBranch = text("deployBranch");
    if (!/^[A-Za-z0-9._/-]+$/.test(deployBranch) || deployBranch.includes("..")) bad("deployBranch", deployBranch, "a git branch name, e.g. main");

    const warmupRequests = integer("warmupRequests", 0, WARMUP_REQUESTS_MAX, `a whole number from 0 (no warm-up) to ${WARMUP_REQUESTS_MAX}`);
    const warmupPath = text("warmupPath") || healthPath;
    if (!URL_PATH.test(warmupPath)) bad("warmupPath", warmupPath, `${URL_PATH_RULE}, for GET requests without side effects (empty: the health path)`);
    const rampSeconds = integer("rampSeconds", 0, RAMP_SECONDS_MAX, `a whole number of seconds from 0 (move all traffic at once) to ${RAMP_SECONDS_MAX}`);
    const rampMaxErrorPercent = integer("rampMaxErrorPercent", 0, 100, "a whole number of percentage points from 0 (fail on any more 5xx answers than the old version's) to 100 (never fail on them)");
    const bakeSeconds = integer("bakeSeconds", 0, BAKE_SECONDS_MAX, `a whole number of seconds from 0 (stop the old slot as soon as it has drained) to ${BAKE_SECONDS_MAX}`);
    const bootPriority = text("bootPriority") as Settings["bootPriority"];
    if (!(BOOT_PRIORITIES as readonly string[]).includes(bootPriority)) bad("bootPriority", bootPriority, `one of ${BOOT_PRIORITIES.join(", ")}`);

    const build = text("build") as Settings["build"];
    if (!(BUILD_MODES as readonly string[]).includes(build)) bad("build", build, `one of ${BUILD_MODES.join(", ")}`);

    const tls = text("tls") as Settings["tls"];
    if (!(TLS_MODES as readonly string[]).includes(tls)) bad("tls", tls, `one of ${TLS_MODES.join(", ")}`);
    if (tls !== "off" && !domain) problems.push(`${PROJECT}:tls = "${tls}" needs a domain: set ${PROJECT}:domain to the name the certificate is for`);
    const acmeEmail = text("acmeEmail");
    if (acmeEmail && !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(acmeEmail)) bad("acmeEmail", acmeEmail, "an email address for Let's Encrypt's expiry notices, or empty");
    const acmeServer = text("acmeServer");
    if (!/^https:\/\/[^\s'"]+$/.test(acmeServer)) bad("acmeServer", acmeServer, "an https:// ACME directory URL");
    const hstsText = text("hsts");
    if (hstsText !== "true" && hstsText !== "false") bad("hsts", hstsText, "true or false");
    const tlsCertificate = text("tlsCertificate");
    // Pulumi.yaml cannot declare tlsKey a secret (no default): set without --secret, the private key
    // would sit in plain text in Pulumi.<stack>.yaml, which is committed.
    if (raw.tlsKey !== undefined && raw.tlsKey.trim() !== "" && !secretKeys.includes("tlsKey")) {
        problems.push(`${PROJECT}:tlsKey is set in plain text, not as a secret: the private key is now readable in Pulumi.${stack}.yaml ` +
            `(do not commit it; if you did, treat the key as exposed). Set it again as a secret with ${setWith("tlsKey", "privkey.pem", true)}, ` +
            `or remove it with \`scripts/pulumi config rm tlsKey --stack ${stack}\` unless tls is custom; the value is not shown`);
    }
    if (tls === "custom") {
        if (!/-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----/.test(tlsCertificate)) {
            problems.push(`${PROJECT}:tlsCertificate is required for tls = "custom": the PEM certificate chain (set it with ${setWith("tlsCertificate", "-- < fullchain.pem")})`);
        }
        if (!raw.tlsKey || !/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(raw.tlsKey)) {
            problems.push(`${PROJECT}:tlsKey is required for tls = "custom": the PEM private key, as a secret (${setWith("tlsKey", "privkey.pem", true)}); the value is not shown`);
        }
    }
    const dnsZone = text("dnsZone").toLowerCase();
    if (dnsZone) {
        if (provider !== "digitalocean") bad("dnsZone", dnsZone, "empty unless provider is digitalocean (on Hetzner and existing hosts, point the domain's A record at serverAddress yourself)");
        else if (!HOSTNAME.test(dnsZone)) bad("dnsZone", dnsZone, "a DNS zone managed by DigitalOcean, e.g. example.com");
        else if (!domain || !(domain === dnsZone || domain.endsWith(`.${dnsZone}`))) bad("dnsZone", dnsZone, `a zone that contains domain ${JSON.stringify(domain)}`);
    }

    if (problems.length > 0) throw new ConfigError(problems);
    return {
        provider: provider!,
        region,
        size,
        image,
        sshPublicKey,
        sshAllowedCidrs,
        host,
        sshUser: setupUser,
        sshPort,
        appName,
        environment,
        stack,
        domain,
        ports: { proxy, slot1, slot2, nrepl1, nrepl2 },
        healthPath,
        startTimeout,
        drainTimeout,
        lockTimeout,
        keepReleases,
        javaOpts,
        bootPriority,
        warmupRequests,
        warmupPath,
        rampSeconds,
        rampMaxErrorPercent,
        bakeSeconds,
        appEnvNames,
        appPath,
        appRevision,
        deployBranch,
        build,
        tls,
        acmeEmail,
        acmeServer,
        hsts: hstsText === "true",
        tlsCertificate,
        dnsZone,
        serverStack,
    };
}

export interface Config {
    settings: Settings;
    /** Secret: the private key Pulumi connects with. */
    sshPrivateKey: pulumi.Output<string>;
    /** Secret: the app's environment variables, names to values. */
    appEnv: pulumi.Output<Record<string, string>>;
    /** Secret: the private key of a `tls: custom` certificate ("" otherwise). */
    tlsKey: pulumi.Output<string>;
}

/**
 * Whether the stack holds `key` as a secret. @pulumi/pulumi's isConfigSecret is internal (not
 * in its typings), so its absence after an upgrade fails loudly rather than passing every key.
 */
function configIsSecret(key: string): boolean {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { isConfigSecret } = require("@pulumi/pulumi/runtime/config") as { isConfigSecret?: (k: string) => boolean };
    if (typeof isConfigSecret !== "function") {
        throw new Error("@pulumi/pulumi/runtime/config no longer exports isConfigSecret: this program cannot tell a secret config value from a plain one");
    }
    return isConfigSecret(`${PROJECT}:${key}`) || isConfigSecret(`${PROJECT}:config:${key}`);
}

/** Reads the stack's configuration once. Throws a ConfigError before any resource exists. */
export function readConfig(): Config {
    const raw: RawConfig = {};
    for (const key of [...SCALAR_KEYS, ...SECRET_KEYS, ...STRUCTURED_KEYS]) {
        // The raw text is needed to validate; secret values are never printed (see parseSettings).
        const value = pulumi.runtime.getConfig(`${PROJECT}:${key}`);
        if (value !== undefined) raw[key] = value;
    }
    // Which values the stack holds as secrets: the CLI passes the list (PULUMI_CONFIG_SECRET_KEYS).
    const settings = parseSettings(raw, pulumi.getStack(), SECRET_KEYS.filter(key => raw[key] !== undefined && configIsSecret(key)));
    const appEnvPlain: Record<string, string> = {};
    if (raw.appEnv) {
        const parsed = JSON.parse(raw.appEnv) as Record<string, unknown>;
        for (const name of settings.appEnvNames) appEnvPlain[name] = String(parsed[name]);
    }
    return {
        settings,
        sshPrivateKey: pulumi.secret(raw.sshPrivateKey!),
        appEnv: pulumi.secret(appEnvPlain),
        tlsKey: pulumi.secret(raw.tlsKey ?? ""),
    };
}
