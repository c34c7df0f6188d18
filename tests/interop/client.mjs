// An OPC UA client not written with asyncua (node-opcua), driven by the interop tests.
// Usage: node client.mjs '<json>' with {endpoint, policy, mode, user, password, pkiDir,
// read: [nodeId…], subscribe: nodeId, notifications: n,
// historyRaw: {nodes: [nodeId…], start, end}, historyAverage: {nodeId, start, end, intervalMs},
// alarm: {ackComment, readAfterAck: [nodeId…]}}. With `alarm` it prints {"ready": true} once
// it watches the Server object's events (the test then raises the alarm), acknowledges the
// first unacknowledged alarm event with the comment and waits for the acknowledged one.
// Last it prints one JSON line: what it saw, or {"error": "...", "status": "<StatusCode
// name>"} and exit 1.
import opcua from "node-opcua-client";
import certificates from "node-opcua-certificate-manager";

const {
  AggregateFunction, AttributeIds, MessageSecurityMode, OPCUAClient, SecurityPolicy,
  TimestampsToReturn, UserTokenType, constructEventFilter,
} = opcua;
const { OPCUACertificateManager } = certificates;

const args = JSON.parse(process.argv[2]);
const out = {};

// Event fields asked for, in this order (node-opcua's names: "." separates a browse path).
const EVENT_FIELDS = ["EventId", "ConditionId", "ConditionName", "Message", "Comment",
  "ClientUserId", "AckedState.Id", "ActiveState.Id", "Severity", "Retain"];

function plain(value) {
  if (value === null || value === undefined) return null;
  if (Buffer.isBuffer(value)) return value.toString("hex");
  if (value.text !== undefined) return value.text; // a LocalizedText
  if (value.namespace !== undefined && value.value !== undefined) return value.toString();
  return value;
}

function dataValues(result) {
  return (result.historyData && result.historyData.dataValues || []).map((dv) => ({
    value: dv.value.value, status: dv.statusCode.name,
    t: dv.sourceTimestamp ? dv.sourceTimestamp.toISOString() : null,
  }));
}

async function history(session) {
  if (args.historyRaw) {
    const { nodes, start, end } = args.historyRaw;
    const results = await session.readHistoryValue(
      nodes.map((nodeId) => ({ nodeId })), new Date(start), new Date(end),
      { returnBounds: false });
    out.historyRaw = results.map((r) => ({ status: r.statusCode.name, values: dataValues(r) }));
  }
  if (args.historyAverage) {
    const { nodeId, start, end, intervalMs } = args.historyAverage;
    const [r] = await session.readAggregateValue(
      [{ nodeId }], new Date(start), new Date(end), [AggregateFunction.Average], intervalMs);
    out.historyAverage = { status: r.statusCode.name, values: dataValues(r) };
  }
}

async function alarm(session) {
  const sub = await session.createSubscription2({
    requestedPublishingInterval: 100, publishingEnabled: true,
    requestedMaxKeepAliveCount: 10, requestedLifetimeCount: 100,
  });
  const events = [];
  let wake = null;
  const item = await sub.monitor(
    { nodeId: "ns=0;i=2253", attributeId: AttributeIds.EventNotifier },
    { samplingInterval: 0, queueSize: 100, discardOldest: true,
      filter: constructEventFilter(EVENT_FIELDS) },
    TimestampsToReturn.Both);
  item.on("changed", (fields) => {
    const ev = { raw: fields };
    EVENT_FIELDS.forEach((name, i) => { ev[name] = plain(fields[i].value); });
    events.push(ev);
    if (wake) wake();
  });
  async function next(test) {
    const deadline = Date.now() + 15000;
    for (;;) {
      const found = events.find(test);
      if (found) return found;
      if (Date.now() > deadline) throw new Error("no such alarm event within 15 s");
      await new Promise((resolve) => { wake = resolve; setTimeout(resolve, 200); });
    }
  }
  console.log(JSON.stringify({ ready: true }));
  const raised = await next((e) => e["ActiveState.Id"] === true && e["AckedState.Id"] === false);
  const status = await session.acknowledgeCondition(
    raised.raw[1].value, raised.raw[0].value, args.alarm.ackComment);
  out.ackStatus = status.name;
  const acked = await next((e) => e["AckedState.Id"] === true);
  const strip = (e) => Object.fromEntries(Object.entries(e).filter(([k]) => k !== "raw"));
  out.alarmEvents = [strip(raised), strip(acked)];
  out.afterAck = [];
  for (const nodeId of args.alarm.readAfterAck || []) {
    const dv = await session.read({ nodeId, attributeId: AttributeIds.Value });
    out.afterAck.push({ nodeId, status: dv.statusCode.name, value: plain(dv.value.value) });
  }
  await sub.terminate();
}

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
      await history(session);
      if (args.alarm) await alarm(session);
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
