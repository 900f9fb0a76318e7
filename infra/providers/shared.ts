import * as pulumi from "@pulumi/pulumi";
import { ConfigError, PROJECT, Settings } from "../config";
import { parseSshCommand, PORT_CONFIG_KEYS, Ports } from "../names";
import { Host, TYPE_PREFIX } from "./host";

/** Ports of this environment that another environment on the same server already uses, as messages naming both. */
export function portCollisions(own: Ports, ownEnv: string, other: Ports, otherEnv: string, otherStack: string): string[] {
    const problems: string[] = [];
    for (const [key, port] of Object.entries(own) as [keyof Ports, number][]) {
        for (const [otherKey, otherPort] of Object.entries(other) as [keyof Ports, number][]) {
            if (port === otherPort) {
                problems.push(`${PROJECT}:${PORT_CONFIG_KEYS[key]} = ${port} (${ownEnv}) collides with ${PORT_CONFIG_KEYS[otherKey]} = ${otherPort} ` +
                    `of the ${otherEnv} environment (stack ${otherStack}) on the same server: give ${ownEnv} ports no other environment there uses`);
            }
        }
    }
    return problems;
}

/**
 * True when the owner's environment answers on the server's address (its appUrl names no domain):
 * nginx has one default server, so an environment without a domain of its own cannot join it.
 */
export function ownerIsDefaultServer(ownerAppUrl: string | undefined, ownerAddress: string): boolean {
    if (!ownerAppUrl) return false; // an owner from before appUrl was an output: nothing to compare
    return new URL(ownerAppUrl).hostname.replace(/^\[|\]$/g, "") === ownerAddress;
}

/**
 * The server of another stack (`serverStack`), read from its outputs. That stack owns the
 * server and its firewall; this one only adds its environment. Ports that collide with the
 * owner's environment fail `pulumi preview`.
 */
export class SharedHost extends pulumi.ComponentResource implements Host {
    readonly address: pulumi.Output<string>;
    readonly ipv6Address: pulumi.Output<string>;
    readonly sshUser: string;
    readonly sshPort: number;
    readonly readyAfter: pulumi.Resource[] = [];
    readonly origin: string;

    constructor(name: string, settings: Settings, opts?: pulumi.ComponentResourceOptions) {
        super(`${TYPE_PREFIX}:host:SharedHost`, name, {}, opts);
        const owner = new pulumi.StackReference(`${name}-owner`, { name: settings.serverStack }, { parent: this });
        const ownerEnv = owner.requireOutput("environment") as pulumi.Output<string>;
        const ownerPorts = owner.requireOutput("ports") as pulumi.Output<Ports>;
        const ownerUrl = owner.getOutput("appUrl") as pulumi.Output<string | undefined>;
        const ownerSsh = owner.getOutput("ssh") as pulumi.Output<string | undefined>;
        this.address = pulumi.all([owner.requireOutput("serverAddress") as pulumi.Output<string>, ownerEnv, ownerPorts, ownerUrl, ownerSsh])
            .apply(([address, env, ports, url, ssh]) => {
                const problems = portCollisions(settings.ports, settings.environment, ports, env, settings.serverStack);
                // An owner from before the ssh output was one: nothing to compare.
                const ownerPort = ssh ? parseSshCommand(ssh).port : undefined;
                if (ownerPort !== undefined && ownerPort !== settings.sshPort) {
                    problems.push(`${PROJECT}:sshPort = ${settings.sshPort}, but the server of stack ${settings.serverStack} takes SSH on port ${ownerPort}: ` +
                        `set sshPort to ${ownerPort} (and sshUser to the user that stack sets up with)`);
                }
                if (env === settings.environment) problems.push(`${PROJECT}:environment = "${env}" is the environment of stack ${settings.serverStack} already: give this one its own name`);
                if (!settings.domain && ownerIsDefaultServer(url, address)) {
                    problems.push(`${PROJECT}:domain is empty, and the ${env} environment (stack ${settings.serverStack}) already answers on the server's address: ` +
                        `nginx has one default server, so give ${settings.environment} a domain`);
                }
                if (problems.length > 0) throw new ConfigError(problems);
                return address;
            });
        // The owner's (its serverIpv6Address output); "" from an owner from before that output.
        this.ipv6Address = owner.getOutput("serverIpv6Address").apply(v => typeof v === "string" ? v : "");
        this.sshUser = settings.sshUser;
        this.sshPort = settings.sshPort;
        this.origin = `stack ${settings.serverStack}`;
        this.registerOutputs({ address: this.address, ipv6Address: this.ipv6Address });
    }
}
