import * as pulumi from "@pulumi/pulumi";
import { Settings } from "../config";

/** Type tokens of this project's components, under one package prefix. */
export const TYPE_PREFIX = "clj-zero-downtime";

/**
 * What the rest of the program sees of a server, whichever provider made it:
 * an address to connect to, the user that sets it up, and the resources that
 * must exist before the first SSH connection.
 */
export interface Host {
    address: pulumi.Output<string>;
    /** Public IPv6 address, where the provider knows it (the clouds; an `existing` host given as one; the owner's for serverStack); empty otherwise. */
    ipv6Address: pulumi.Output<string>;
    sshUser: string;
    sshPort: number;
    /** Cloud resources the first SSH connection waits for (none for `existing`). */
    readyAfter: pulumi.Resource[];
    /** Human-readable note on where the server came from, for outputs. */
    origin: string;
}

/** Server name on the cloud: the app and the stack, so two stacks never collide. */
export function serverName(settings: Settings): string {
    return `${settings.appName}-${settings.environment}`;
}

/** The cloud firewall's inbound rules, shared by both clouds: SSH from the allowed networks, web from anywhere. */
export function inboundRules(settings: Settings): { port: number; sources: string[] }[] {
    const anywhere = ["0.0.0.0/0", "::/0"];
    return [
        { port: settings.sshPort, sources: settings.sshAllowedCidrs },
        { port: 80, sources: anywhere },
        { port: 443, sources: anywhere },
    ];
}
