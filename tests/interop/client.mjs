// An OPC UA client not written with asyncua (node-opcua), driven by the interop tests.
// Usage: node client.mjs '<json>' with {endpoint, policy, mode, user, password, pkiDir,
// read: [nodeId…], subscribe: nodeId, notifications: n}. Prints one JSON line: what it saw,
// or {"error": "...", "status": "<StatusCode name>"} and exit 1.
import opcua from "node-opcua-client";
import certificates from "node-opcua-certificate-manager";

const {
  AttributeIds, MessageSecurityMode, OPCUAClient, SecurityPolicy, TimestampsToReturn,
  UserTokenType,
} = opcua;
const { OPCUACertificateManager } = certificates;

const args = JSON.parse(process.argv[2]);
const out = {};

async function main() {
  const certificateManager = new OPCUACertificateManager({
    rootFolder: args.pkiDir,
    automaticallyAcceptUnknownCertificate: true, // the test's server certificate
  });
  await certificateManager.initialize();
  const client = OPCUAClient.create({
    applicationName: "carbonscada-interop",
    applicationUri: "urn:carbonscada:interop:node-opcua",
    securityMode: MessageSecurityMode[args.mode],
    securityPolicy: SecurityPolicy[args.policy],
    endpointMustExist: true,
    clientCertificateManager: certificateManager,
    connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
    requestedSessionTimeout: 20000,
  });
  await client.connect(args.endpoint);
  try {
    const identity = args.user
      ? { type: UserTokenType.UserName, userName: args.user, password: args.password }
      : { type: UserTokenType.Anonymous };
    const session = await client.createSession(identity);
    try {
      const objects = await session.browse("ns=0;i=85");
      out.objects = objects.references.map((r) => r.browseName.name);
      out.read = [];
      for (const nodeId of args.read || []) {
        const dv = await session.read({ nodeId, attributeId: AttributeIds.Value });
        out.read.push({ nodeId, status: dv.statusCode.name, value: dv.value.value });
      }
      if (args.subscribe) {
        const sub = await session.createSubscription2({
          requestedPublishingInterval: 100, publishingEnabled: true,
          requestedMaxKeepAliveCount: 10, requestedLifetimeCount: 100,
        });
        const item = await sub.monitor(
          { nodeId: args.subscribe, attributeId: AttributeIds.Value },
          { samplingInterval: 50, queueSize: 10, discardOldest: true },
          TimestampsToReturn.Both);
        out.notifications = await new Promise((resolve) => {
          const seen = [];
          const timer = setTimeout(() => resolve(seen), 15000);
          item.on("changed", (dv) => {
            seen.push({ status: dv.statusCode.name, value: dv.value.value });
            if (seen.length >= (args.notifications || 1)) {
              clearTimeout(timer);
              resolve(seen);
            }
          });
        });
        await sub.terminate();
      }
    } finally {
      await session.close();
    }
  } finally {
    await client.disconnect();
  }
}

main().then(
  () => { console.log(JSON.stringify(out)); process.exit(0); },
  (err) => {
    const status = (err && err.response && err.response.responseHeader
      && err.response.responseHeader.serviceResult && err.response.responseHeader.serviceResult.name)
      || (err && err.statusCode && err.statusCode.name) || "";
    console.log(JSON.stringify({ ...out, error: String(err && err.message), status }));
    process.exit(1);
  });
