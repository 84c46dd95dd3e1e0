// @platformatic/kafka (pure JavaScript; Kafka 3.5-4.1 protocol versions,
// so Fetch by topic id, v13+): admin create topic, produce with keys and
// headers, a consumer group that reads everything and commits, and a
// second consumer in the same group that resumes at the commit.
import { randomUUID } from 'node:crypto'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

// ES modules ignore NODE_PATH: resolve the package from it by hand.
const require = createRequire(join(process.env.NODE_PATH, 'x.js'))
const { Admin, Consumer, Producer, stringDeserializers, stringSerializers } = await import(
  pathToFileURL(require.resolve('@platformatic/kafka')).href
)

const addr = process.argv[2]
const run = randomUUID().slice(0, 8)
const topic = `plat-${run}`
const groupId = `plat-group-${run}`
const N = 200
const fail = msg => {
  console.error('FAILED:', msg)
  process.exit(1)
}

const admin = new Admin({ clientId: 'plat-admin', bootstrapBrokers: [addr] })
await admin.createTopics({ topics: [topic], partitions: 3, replicas: 1 })
const md = await admin.metadata({ topics: [topic] })
await admin.close()
const t = md.topics.get(topic)
if (!t || !t.id) fail(`Metadata gives no topic id for ${topic}`)
console.log(`metadata: ${md.brokers.size} broker(s), topic ${topic} id ${t.id}`)

const producer = new Producer({ clientId: 'plat-producer', bootstrapBrokers: [addr], serializers: stringSerializers })
for (let i = 0; i < N; i += 20) {
  const messages = []
  for (let j = i; j < i + 20; j++) {
    messages.push({ topic, key: `k${j % 7}`, value: `v${j}`, headers: { h: 'x' } })
  }
  await producer.send({ messages })
}
await producer.close()

async function consume (want, timeoutMs) {
  const consumer = new Consumer({
    groupId,
    clientId: 'plat-consumer',
    bootstrapBrokers: [addr],
    deserializers: stringDeserializers
  })
  const stream = await consumer.consume({
    autocommit: false,
    topics: [topic],
    mode: 'committed',
    fallbackMode: 'earliest',
    sessionTimeout: 10000,
    heartbeatInterval: 500
  })
  const got = []
  const timer = setTimeout(() => stream.close(), timeoutMs)
  for await (const m of stream) {
    got.push(m)
    await m.commit()
    if (got.length >= want) break
  }
  clearTimeout(timer)
  await stream.close()
  await consumer.close(true)
  return got
}

const first = await consume(N, 60000)
if (first.length !== N) fail(`first consumer read ${first.length} of ${N}`)
const values = new Set(first.map(m => m.value))
if (values.size !== N) fail(`distinct values ${values.size}`)
const byKey = {}
for (const m of first) {
  const h = m.headers instanceof Map ? m.headers.get('h') : m.headers?.h
  if (String(h) !== 'x') fail(`header lost: ${String(h)}`)
  ;(byKey[m.key] ??= []).push(Number(m.value.slice(1)))
}
for (const [k, vs] of Object.entries(byKey)) {
  if (vs.some((v, i) => i > 0 && v < vs[i - 1])) fail(`key ${k} out of order`)
}
// Everything was committed: a new member of the group finds nothing to read.
const second = await consume(1, 5000)
if (second.length !== 0) fail(`after committing everything, a new member read ${second.length}`)
console.log(`@platformatic/kafka: ${N} produced and consumed in a group with commits, per-key order kept, a new member resumed at the end`)
