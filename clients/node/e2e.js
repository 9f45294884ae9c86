// End to end against a running server: upload -> train -> watch -> export -> predict.
// Usage: node e2e.js HOST:PORT DATASET.zip IMAGE.png [BASE_MODEL] [WEIGHTS]
// Prints one JSON line with the results; exits non-zero on any failure.
import { readFile } from 'node:fs/promises';
import { EdgetuneClient } from './client.js';

const [target, zipPath, imagePath, baseModel = 'resnet18', weights = 'random'] = process.argv.slice(2);
if (!target || !zipPath || !imagePath) {
  console.error('usage: node e2e.js HOST:PORT DATASET.zip IMAGE.png [BASE_MODEL] [WEIGHTS]');
  process.exit(2);
}

const client = new EdgetuneClient(target);
try {
  const models = await client.listBaseModels();
  const dataset = await client.uploadDataset(zipPath, 'node-e2e');
  const job = await client.createJob({
    datasetId: dataset.id, baseModel, weights, method: 'METHOD_FULL',
    hyperparameters: { epochs: 2, imageSize: 32, batchSize: 8 },
  });
  const kinds = {};
  const done = await client.waitForJob(job.id, (e) => { kinds[e.kind] = (kinds[e.kind] ?? 0) + 1; });
  if (done.state !== 'JOB_STATE_SUCCEEDED') throw new Error(`job ${done.state}: ${done.error}`);
  const exported = await client.exportModel(job.id);
  if (!exported.valid) throw new Error(`export invalid: ${exported.error}`);
  const [result] = await client.predict(exported.id, [await readFile(imagePath)], 3);
  console.log(JSON.stringify({
    models: models.length, datasetId: dataset.id, classes: dataset.report.classes.map((c) => c.label),
    jobId: job.id, state: done.state, events: kinds, bestAccuracy: done.best.valAccuracy,
    exportId: exported.id, parityMargin: exported.parity.margin, parityPassed: exported.parity.passed,
    top: result.top,
  }));
} catch (err) {
  console.error(`node client failed: ${err.code ?? ''} ${err.details ?? err.message}`);
  process.exitCode = 1;
} finally {
  client.close();
}
