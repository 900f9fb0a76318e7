import * as net from "net";
import * as pulumi from "@pulumi/pulumi";
import { Settings } from "./config";
import { EnvironmentLayout, sshCommand } from "./names";

/** The records that point `domain` at the server: AAAA too where its IPv6 address is known. */
function dnsRecordsHint(domain: string, address: string, ipv6Address: string): string {
    if (net.isIP(address) === 6) return `point an AAAA record for ${domain} at ${address}`;
    if (ipv6Address) return `point an A record for ${domain} at ${address} and an AAAA record at ${ipv6Address}`;
    return `point an A record for ${domain} at ${address} (and AAAA at its IPv6 address, if any)`;
}

/**
 * How a user reaches the server, the app and the git remote. Pure, so tests can check the strings.
 * `ipv6Address`: the server's public IPv6 address where the provider knows it, else "".
 */
export function describeAccess(settings: Settings, env: EnvironmentLayout, address: string, deployUser: string, ipv6Address = "") {
    const gitPort = settings.sshPort === 22 ? "" : `:${settings.sshPort}`;
    const bracketed = address.includes(":") ? `[${address}]` : address;
    return {
        serverAddress: address,
        serverIpv6Address: ipv6Address,
        ssh: sshCommand(deployUser, address, settings.sshPort),
        sshRoot: sshCommand(settings.sshUser, address, settings.sshPort),
        appUrl: settings.domain ? `${settings.tls === "off" ? "http" : "https"}://${settings.domain}/` : `http://${bracketed}/`,
        gitRemote: `ssh://${deployUser}@${bracketed}${gitPort}${env.repoDir}`,
        dnsHint: !settings.domain
            ? "no domain set: the app answers on the server's address"
            : settings.dnsZone
                ? `A/AAAA records for ${settings.domain} in the DigitalOcean zone ${settings.dnsZone} point at this server`
                : dnsRecordsHint(settings.domain, address, ipv6Address),
    };
}

export function outputsFor(settings: Settings, env: EnvironmentLayout, address: pulumi.Output<string>, ipv6Address: pulumi.Output<string>,
    deployUser: string, ready: pulumi.Resource) {
    // Outputs wait for the environment setup so that a URL is only shown for a server that serves.
    const access = pulumi.all([address, ipv6Address, ready.urn]).apply(([a, v6]) => describeAccess(settings, env, a, deployUser, v6));
    return {
        serverAddress: access.serverAddress,
        // For the domain's AAAA record (dnsHint); "" where the provider does not know it.
        serverIpv6Address: access.serverIpv6Address,
        ssh: access.ssh,
        appUrl: access.appUrl,
        gitRemote: access.gitRemote,
        dnsHint: access.dnsHint,
        environment: settings.environment,
        supervisorGroup: env.id,
        appDirectory: env.baseDir,
    };
}
