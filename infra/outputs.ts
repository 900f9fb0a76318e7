import * as pulumi from "@pulumi/pulumi";
import { Settings } from "./config";
import { EnvironmentLayout, sshCommand } from "./names";

/** How a user reaches the server, the app and the git remote. Pure, so tests can check the strings. */
export function describeAccess(settings: Settings, env: EnvironmentLayout, address: string, deployUser: string) {
    const gitPort = settings.sshPort === 22 ? "" : `:${settings.sshPort}`;
    const bracketed = address.includes(":") ? `[${address}]` : address;
    return {
        serverAddress: address,
        ssh: sshCommand(deployUser, address, settings.sshPort),
        sshRoot: sshCommand(settings.sshUser, address, settings.sshPort),
        appUrl: settings.domain ? `${settings.tls === "off" ? "http" : "https"}://${settings.domain}/` : `http://${bracketed}/`,
        gitRemote: `ssh://${deployUser}@${bracketed}${gitPort}${env.repoDir}`,
        dnsHint: !settings.domain
            ? "no domain set: the app answers on the server's address"
            : settings.dnsZone
                ? `A/AAAA records for ${settings.domain} in the DigitalOcean zone ${settings.dnsZone} point at this server`
                : `point an A record for ${settings.domain} at ${address} (and AAAA at its IPv6 address, if any)`,
    };
}

export function outputsFor(settings: Settings, env: EnvironmentLayout, address: pulumi.Output<string>, deployUser: string,
    ready: pulumi.Resource) {
    // Outputs wait for the environment setup so that a URL is only shown for a server that serves.
    const access = pulumi.all([address, ready.urn]).apply(([a]) => describeAccess(settings, env, a, deployUser));
    return {
        serverAddress: access.serverAddress,
        ssh: access.ssh,
        appUrl: access.appUrl,
        gitRemote: access.gitRemote,
        dnsHint: access.dnsHint,
        environment: settings.environment,
        supervisorGroup: env.id,
        appDirectory: env.baseDir,
    };
}
