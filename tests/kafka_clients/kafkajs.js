// kafkajs 2.2 (non-flexible versions only): admin, idempotent gzip producer,
// a consumer group that commits, and the committed offsets read back.
const { Kafka, CompressionTypes, logLevel } = require('kafkajs');
const addr = process.argv[2];
const run = Math.random().toString(16).slice(2, 10);
const topic = `kjs-${run}`;
const groupId = `kjs-group-${run}`;
const kafka = new Kafka({ clientId: 'kafkajs-test', brokers: [addr], logLevel: logLevel.WARN });

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function main() {
  console.log('kafkajs', require('kafkajs/package.json').version);
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < 200; i++) {
    messages.push({ key: `k${i}`, value: `v${i}`, headers: { h: 'x' } });
  }
  for (let i = 0; i < 200; i += 50) {
    await producer.send({ topic, compression: CompressionTypes.GZIP, messages: messages.slice(i, i + 50) });
  }
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 1000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Set();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`consumed ${seen.size} of 200`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        assert(message.headers.h.toString() === 'x', 'header');
        assert(message.value.toString() === 'v' + message.key.toString().slice(1), 'value');
        seen.add(message.value.toString());
        if (seen.size === 200) {
          clearTimeout(timer);
          resolve();
        }
      },
    }).catch(reject);
  });
  await consumer.disconnect(); // commits and leaves the group

  const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
  const total = offsets[0].partitions.reduce((s, p) => s + Number(p.offset), 0);
  assert(total === 200, `committed offsets sum to ${total}`);
  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
  console.log('produced 200 (idempotent, gzip), consumed 200, committed 200');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
