// The program: config -> host -> setup -> deploy -> outputs.
import * as pulumi from "@pulumi/pulumi";
import { resolveAppRevision } from "./app-source";
import { readConfig } from "./config";
import { Deploy } from "./deploy";
import { DEPLOY_USER, layout } from "./names";
import { outputsFor } from "./outputs";
import { provisionHost } from "./providers";
import { EnvironmentSetup, HostSetup } from "./setup";

export function program() {
    const { settings, sshPrivateKey, appEnv, tlsKey } = readConfig();
    const env = layout(settings.appName, settings.environment, settings.ports);
    // Resolved before any resource exists, so a bad appPath or appRevision fails the preview.
    const revision = resolveAppRevision(settings.appPath, settings.appRevision);
    if (revision.uncommitted.length > 0) {
        pulumi.log.warn(`${revision.uncommitted.length} uncommitted change(s) in ${settings.appPath} are not deployed ` +
            `(only commit ${revision.commit.slice(0, 12)} is): ${revision.uncommitted.slice(0, 10).join(", ")}`);
    }

    const host = provisionHost("host", settings);
    const hostSetup = new HostSetup("setup", { host, settings, sshPrivateKey });
    const environment = new EnvironmentSetup(env.id, { host, hostSetup, settings, layout: env, appEnv, tlsKey });
    const deploy = new Deploy(`${env.id}-deploy`, {
        host, settings, layout: env, revision, appEnv, sshPrivateKey, after: [environment.environment, environment.appEnv],
    });

    return {
        ...outputsFor(settings, env, host.address, DEPLOY_USER, environment),
        liveRevision: deploy.liveRevision,
        liveSlot: deploy.liveSlot,
    };
}

export type ProgramOutputs = ReturnType<typeof program>;
