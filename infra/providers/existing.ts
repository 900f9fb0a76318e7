import * as net from "net";
import * as pulumi from "@pulumi/pulumi";
import { Settings } from "../config";
import { Host, TYPE_PREFIX } from "./host";

/** A server the user already has: no cloud resources; the host setup's firewall is its only firewall. */
export class ExistingHost extends pulumi.ComponentResource implements Host {
    readonly address: pulumi.Output<string>;
    readonly ipv6Address: pulumi.Output<string>;
    readonly sshUser: string;
    readonly sshPort: number;
    readonly readyAfter: pulumi.Resource[] = [];
    readonly origin = "existing";

    constructor(name: string, settings: Settings, opts?: pulumi.ComponentResourceOptions) {
        super(`${TYPE_PREFIX}:host:ExistingHost`, name, {}, opts);
        this.address = pulumi.output(settings.host);
        // Known only when `host` is an IPv6 address itself.
        this.ipv6Address = pulumi.output(net.isIP(settings.host) === 6 ? settings.host : "");
        this.sshUser = settings.sshUser;
        this.sshPort = settings.sshPort;
        this.registerOutputs({ address: this.address, ipv6Address: this.ipv6Address });
    }
}
