import * as pulumi from "@pulumi/pulumi";
import { ConfigError, PROJECT, Settings } from "../config";
import { Ports } from "../names";
import { Host, TYPE_PREFIX } from "./host";

const PORT_NAMES: Record<keyof Ports, string> = {
    proxy: "proxyPort", slot1: "slot1Port", slot2: "slot2Port", nrepl1: "nrepl1Port", nrepl2: "nrepl2Port",
};

/** Ports of this environment that another environment on the same server already uses, as messages naming both. */
export function portCollisions(own: Ports, ownEnv: string, other: Ports, otherEnv: string, otherStack: string): string[] {
    const problems: string[] = [];
    for (const [key, port] of Object.entries(own) as [keyof Ports, number][]) {
        for (const [otherKey, otherPort] of Object.entries(other) as [keyof Ports, number][]) {
            if (port === otherPort) {
                problems.push(`${PROJECT}:${PORT_NAMES[key]} = ${port} (${ownEnv}) collides with ${PORT_NAMES[otherKey]} = ${otherPort} ` +
                    `of the ${otherEnv} environment (stack ${otherStack}) on the same server: give ${ownEnv} ports no other environment there uses`);
            }
        }
    }
    return problems;
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
        this.address = pulumi.all([owner.requireOutput("serverAddress") as pulumi.Output<string>, ownerEnv, ownerPorts])
            .apply(([address, env, ports]) => {
                const problems = portCollisions(settings.ports, settings.environment, ports, env, settings.serverStack);
                if (env === settings.environment) problems.push(`${PROJECT}:environment = "${env}" is the environment of stack ${settings.serverStack} already: give this one its own name`);
                if (problems.length > 0) throw new ConfigError(problems);
                return address;
            });
        this.ipv6Address = pulumi.output("");
        this.sshUser = settings.sshUser;
        this.sshPort = settings.sshPort;
        this.origin = `stack ${settings.serverStack}`;
        this.registerOutputs({ address: this.address });
    }
}
