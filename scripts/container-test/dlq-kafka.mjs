#!/usr/bin/env node
// Kafka side of scripts/container-test.sh, through the project's own kafkajs:
//
//   node dlq-kafka.mjs create-topic <brokers> <topic>
//       create the topic (one partition) unless it exists
//   node dlq-kafka.mjs expect-records <brokers> <topic> <runner-host> <min> <timeout-sec>
//       read the topic from the beginning until at least <min> distinct dead-letter records written by the
//       runner on <runner-host> (the record's runner.host: a container's host name) have arrived; print
//       one JSON summary line; exit 0 when they did, 1 when the timeout passed first
import { Kafka, logLevel } from 'kafkajs';

const [command, brokers, topic, ...rest] = process.argv.slice(2);
if (command === undefined || brokers === undefined || topic === undefined) {
  process.stderr.write('usage: dlq-kafka.mjs create-topic|expect-records <brokers> <topic> ...\n');
  process.exit(2);
}

const kafka = new Kafka({
  clientId: 'cache-refresher-container-test',
  brokers: brokers.split(','),
  logLevel: logLevel.NOTHING,
  connectionTimeout: 5000,
});

async function createTopic() {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = await admin.listTopics();
    if (!existing.includes(topic)) {
      await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
    }
  } finally {
    await admin.disconnect();
  }
  return 0;
}

async function expectRecords(host, min, timeoutSec) {
  const consumer = kafka.consumer({ groupId: `container-test-${process.pid}-${Date.now()}` });
  const runIds = new Set();
  let records = 0;
  let fromHost = 0;
  let done;
  const finished = new Promise((resolve) => {
    done = resolve;
  });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: ({ message }) => {
      records++;
      const value = JSON.parse(message.value?.toString('utf8') ?? 'null');
      if (value?.runner?.host === host) {
        fromHost++;
        runIds.add(value.run_id);
        if (runIds.size >= min) done(true);
      }
      return Promise.resolve();
    },
  });
  const timer = setTimeout(() => done(false), timeoutSec * 1000);
  const ok = await finished;
  clearTimeout(timer);
  await consumer.disconnect();
  process.stdout.write(
    JSON.stringify({ records, from_host: fromHost, distinct_run_ids: runIds.size, wanted: min }) + '\n',
  );
  return ok ? 0 : 1;
}

let code;
switch (command) {
  case 'create-topic':
    code = await createTopic();
    break;
  case 'expect-records': {
    const [host, min, timeoutSec] = rest;
    code = await expectRecords(host ?? '', Number(min), Number(timeoutSec));
    break;
  }
  default:
    process.stderr.write(`dlq-kafka.mjs: unknown command ${command}\n`);
    code = 2;
}
process.exit(code);
