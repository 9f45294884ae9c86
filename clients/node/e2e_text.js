// Text classification end to end: upload rows -> train -> export -> classifyText.
// Usage: node e2e_text.js HOST:PORT ROWS.jsonl [BASE_MODEL] [WEIGHTS]
// Prints one JSON line with the results; exits non-zero on any failure.
import { EdgetuneClient } from './client.js';

const [target, rowsPath, baseModel = 'bert', weights = 'random'] = process.argv.slice(2);
if (!target || !rowsPath) {
  console.error('usage: node e2e_text.js HOST:PORT ROWS.jsonl [BASE_MODEL] [WEIGHTS]');
  process.exit(2);
}

const client = new EdgetuneClient(target);
try {
  const dataset = await client.uploadDataset(rowsPath, 'node-text');
  const job = await client.createJob({
    datasetId: dataset.id, task: 'TASK_TEXT_CLASSIFICATION', baseModel, weights, method: 'METHOD_LORA',
    hyperparameters: { epochs: 6, maxLength: 32, batchSize: 16, learningRate: 0.01 },
  });
  const done = await client.waitForJob(job.id);
  if (done.state !== 'JOB_STATE_SUCCEEDED') throw new Error(`job ${done.state}: ${done.error}`);
  const exported = await client.exportModel(job.id);
  if (!exported.valid) throw new Error(`export invalid: ${exported.error}`);
  const results = await client.classifyText(exported.id, ['pizza pasta oven', 'goal match team'], 2);
  console.log(JSON.stringify({
    task: dataset.report.task, rows: dataset.report.rows, classes: dataset.report.classes.map((c) => c.label),
    state: done.state, exportTask: exported.task, maxLength: exported.maxLength,
    compared: [...new Set(exported.parity.cases.map((c) => c.compared))], results,
  }));
} catch (err) {
  console.error(`node client failed: ${err.code ?? ''} ${err.details ?? err.message}`);
  process.exitCode = 1;
} finally {
  client.close();
}
