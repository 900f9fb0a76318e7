// The program: config -> host -> setup -> deploy -> outputs.
import * as pulumi from "@pulumi/pulumi";
import { resolveAppRevision } from "./app-source";
import { readConfig } from "./config";
import { Deploy } from "./deploy";
import * as command from "@pulumi/command";
import { DEPLOY_USER, DESTROY_GUARD, layout } from "./names";
import { outputsFor } from "./outputs";
import { provisionHost } from "./providers";
import { connectionFor, EnvironmentSetup, HostSetup, rootPrefix } from "./setup";

export async function program() {
    const { settings, sshPrivateKey, appEnv, tlsKey } = readConfig();
    const env = layout(settings.appName, settings.environment, settings.ports);
    // Resolved before any resource exists, so a bad appPath or appRevision fails the preview.
    const revision = resolveAppRevision(settings.appPath, settings.appRevision);
    if (revision.uncommitted.length > 0) {
        pulumi.log.warn(`${revision.uncommitted.length} uncommitted change(s) in ${settings.appPath} are not deployed ` +
            `(only commit ${revision.commit.slice(0, 12)} is): ${revision.uncommitted.slice(0, 10).join(", ")}`);
    }

    const host = await provisionHost("host", settings);
    // The stack that owns the server sets up what all environments share; a stack that
    // shares another's server (serverStack) only adds its environment.
    const ownsServer = !settings.serverStack;
    const hostSetup = ownsServer ? new HostSetup("setup", { host, settings, sshPrivateKey }) : undefined;
    const rootConnection = hostSetup?.rootConnection ?? connectionFor(host, host.sshUser, sshPrivateKey);
    const environment = new EnvironmentSetup(env.id, {
        host, connection: rootConnection, after: hostSetup ? [hostSetup.done] : [], settings, layout: env, appEnv, tlsKey,
        appGitPath: revision.prefix.replace(/\/+$/, ""),
    });
    const deploy = new Deploy(`${env.id}-deploy`, {
        host, settings, layout: env, revision, appEnv, sshPrivateKey, after: [environment.environment, environment.appEnv],
    });
    if (hostSetup) {
        // Deleted first on `pulumi destroy`, before anything of the host (its DNS records too), the
        // environment or the deploy: Pulumi deletes a resource only after those that depend on it.
        // So a destroy it stops while other stacks' environments live on this server changes nothing.
        new command.remote.Command("destroy-guard", {
            connection: rootConnection,
            create: "true",
            delete: `${rootPrefix(host.sshUser)}${DESTROY_GUARD} ${env.id}`,
            addPreviousOutputInEnv: false,
        }, { parent: hostSetup, dependsOn: [host, environment, deploy] });
    }

    return {
        ...outputsFor(settings, env, host.address, host.ipv6Address, DEPLOY_USER, environment),
        liveRevision: deploy.liveRevision,
        liveSlot: deploy.liveSlot,
        // Read by stacks that share this server (serverStack), to refuse colliding ports.
        ports: settings.ports,
    };
}

