// A small, idiomatic Node.js client for the edgetune gRPC API (edgetune.v1).
// The contract is read at run time from protos/ with @grpc/proto-loader: no generated code.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const here = path.dirname(fileURLToPath(import.meta.url));
export const PROTO_ROOT = path.resolve(here, '..', '..', 'protos');
const FILES = ['datasets', 'jobs', 'models', 'exports', 'inference'].map((n) => `edgetune/v1/${n}.proto`);
const CHUNK = 1 << 20;
const TERMINAL = new Set(['JOB_STATE_SUCCEEDED', 'JOB_STATE_FAILED', 'JOB_STATE_CANCELLED']);

function loadPackage() {
  const def = protoLoader.loadSync(FILES, {
    includeDirs: [PROTO_ROOT], keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true,
  });
  return grpc.loadPackageDefinition(def).edgetune.v1;
}

// Turn a unary callback method into a promise with a deadline in seconds.
function call(stub, method, request, deadlineS) {
  const deadline = new Date(Date.now() + deadlineS * 1000);
  return new Promise((resolve, reject) => {
    stub[method](request, { deadline }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** Events of a stream opened by `open(lastId)`, reopened from the last id if it drops (server restart). */
async function* follow(open, afterEventId, maxReconnectS) {
  let last = afterEventId;
  let downSince = null;
  for (;;) {
    try {
      for await (const event of open(last)) {
        downSince = null;
        last = event.id;
        yield event;
      }
      return;
    } catch (err) {
      if (err.code !== grpc.status.UNAVAILABLE && err.code !== grpc.status.CANCELLED) throw err;
      downSince ??= Date.now();
      if (Date.now() - downSince > maxReconnectS * 1000) throw err;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

/** An interceptor that puts `authorization: Bearer <token>` on every call (TLS or not). */
function bearer(token) {
  return (options, nextCall) => new grpc.InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      metadata.set('authorization', `Bearer ${token}`);
      next(metadata, listener);
    },
  });
}

export class EdgetuneClient {
  /**
   * @param {string} target host:port of an edgetune server
   * @param {object} [security] for servers with auth and TLS (docs/api.md):
   *   token (bearer token), tlsCa (PEM file of the CA that signed the server's certificate: TLS on),
   *   tlsCert + tlsKey (client certificate for mutual TLS; TLS on, the system's CAs unless tlsCa),
   *   serverName (the name the server's
   *   certificate must carry, default the target's host)
   */
  constructor(target = '127.0.0.1:50051', { token, tlsCa, tlsCert, tlsKey, serverName } = {}) {
    const v1 = loadPackage();
    if (Boolean(tlsCert) !== Boolean(tlsKey)) throw new Error('a client certificate needs both tlsCert and tlsKey');
    // TLS with a CA, or with a client certificate alone (then the system's CAs check the server).
    const creds = tlsCa || tlsCert
      ? grpc.credentials.createSsl(tlsCa ? readFileSync(tlsCa) : null, tlsKey ? readFileSync(tlsKey) : null,
        tlsCert ? readFileSync(tlsCert) : null)
      : grpc.credentials.createInsecure();
    const channelOptions = serverName
      ? { 'grpc.ssl_target_name_override': serverName, 'grpc.default_authority': serverName } : {};
    // One channel (one HTTP/2 connection) shared by every service stub.
    this.channel = new grpc.Channel(target, creds, channelOptions);
    const opts = { channelOverride: this.channel, interceptors: token ? [bearer(token)] : [] };
    this.datasets = new v1.Datasets(target, creds, opts);
    this.jobs = new v1.Jobs(target, creds, opts);
    this.exports = new v1.Exports(target, creds, opts);
    this.inference = new v1.Inference(target, creds, opts);
    this.models = new v1.Models(target, creds, opts);
  }

  close() {
    this.channel.close();
  }

  /**
   * Upload a dataset: a .zip / .tar.gz of an ImageFolder, or a .jsonl / .csv / .tsv of text rows
   * (text,label or prompt,response). `columns` maps those names to the file's own columns,
   * e.g. { text: 'SMS', label: 'Label' }. Resolves to the Dataset with its validation report.
   */
  async uploadDataset(filePath, name = path.basename(filePath), columns = {}) {
    const data = await readFile(filePath);
    const sha256 = createHash('sha256').update(data).digest('hex');
    const format = formatOf(filePath);
    const deadline = new Date(Date.now() + 600_000);
    return new Promise((resolve, reject) => {
      const stream = this.datasets.uploadDataset({ deadline }, (err, res) => (err ? reject(err) : resolve(res)));
      stream.write({ header: { name, format, totalSize: data.length, sha256, columns } });
      for (let i = 0; i < data.length; i += CHUNK) stream.write({ chunk: data.subarray(i, i + CHUNK) });
      stream.end();
    });
  }

  listBaseModels() {
    return call(this.models, 'listBaseModels', {}, 5).then((r) => r.models);
  }

  /**
   * Queue a job. `hyperparameters` uses the proto's camelCase names (epochs, imageSize, maxLength, ...);
   * `task` is TASK_IMAGE_CLASSIFICATION, TASK_TEXT_CLASSIFICATION or TASK_TEXT_GENERATION; `gpus` is the
   * GPU count (0: one when the server has any).
   */
  createJob({ datasetId, baseModel = '', task = 'TASK_IMAGE_CLASSIFICATION', method = 'METHOD_FULL',
    weights = 'catalog', hyperparameters = {}, idempotencyKey = '', gpus = 0 }) {
    return call(this.jobs, 'createJob', {
      task, baseModel, weights, method, hyperparameters, datasetId, idempotencyKey, gpus,
    }, 10);
  }

  getJob(jobId) {
    return call(this.jobs, 'getJob', { jobId }, 5);
  }

  /**
   * Async iterator over a job's events until it finishes. If the stream drops (server restart),
   * it reconnects from the last event id for up to `maxReconnectS` seconds, so nothing is missed.
   */
  async* watch(jobId, afterEventId = 0, maxReconnectS = 120) {
    yield* follow((last) => this.jobs.watchJob({ jobId, afterEventId: last }), afterEventId, maxReconnectS);
  }

  /** Async iterator over an export's events (state changes, log lines) until it finishes; reconnects like `watch`. */
  async* watchExport(exportId, afterEventId = 0, maxReconnectS = 120) {
    yield* follow((last) => this.exports.watchExport({ exportId, afterEventId: last }), afterEventId, maxReconnectS);
  }

  /** Wait for a job to finish, calling onEvent for each event; resolves to the final Job. */
  async waitForJob(jobId, onEvent = () => {}) {
    for await (const event of this.watch(jobId)) onEvent(event);
    const job = await this.getJob(jobId);
    if (!TERMINAL.has(job.state)) throw new Error(`watch ended with job in ${job.state}`);
    return job;
  }

  /**
   * Export a SUCCEEDED job through the parity gate. Options: atol / rtol (0: the task's default;
   * per output |onnxruntime - pytorch| <= atol + rtol * |pytorch|), allowDegenerate (export a job
   * whose `warnings` flag a degenerate model), precisions (e.g. ['fp16', 'int8']: variants kept only
   * if they pass their held-out accuracy gate). Exports are durable jobs on the server: this
   * queues one and, unless `wait: false`, follows it (`onEvent` sees each event) and resolves to
   * the finished export (`valid`, or `error`). A number is read as `{ atol }`, as before.
   */
  async exportModel(jobId, options = {}) {
    const { atol = 0, rtol = 0, allowDegenerate = false, precisions = [], wait = true, onEvent = () => {} } =
      typeof options === 'number' ? { atol: options } : options;
    const queued = await call(this.exports, 'exportModel', { jobId, atol, rtol, allowDegenerate, precisions }, 30);
    if (!wait) return queued;
    for await (const event of this.watchExport(queued.id)) onEvent(event);
    return call(this.exports, 'getExport', { exportId: queued.id }, 5);
  }

  /**
   * Classify encoded images (Buffers); resolves to one { top: [{label, score, index}], logits } per
   * image (logits filled when `includeLogits`). `topK` 0: 5, or every class when fewer.
   * `variant`: 'fp32', 'fp16' or 'int8' (default: the export's default variant).
   */
  predict(exportId, images, topK = 0, variant = '', includeLogits = false) {
    return call(this.inference, 'predict', { exportId, images, topK, variant, includeLogits }, 30)
      .then((r) => r.results);
  }

  /** Classify texts with a text classification export; one { top: [{label, score, index}] } per text. */
  classifyText(exportId, texts, topK = 0) {
    return call(this.inference, 'predict', { exportId, texts, topK }, 30).then((r) => r.results);
  }

  /** Async iterator over a completion from a text generation export: { index, tokenId, text } per token. */
  async* generate(exportId, prompt, maxNewTokens = 0, deadlineS = 120) {
    const deadline = new Date(Date.now() + deadlineS * 1000);
    yield* this.inference.generate({ exportId, prompt, maxNewTokens }, { deadline });
  }
}

const FORMATS = {
  '.zip': 'DATASET_FORMAT_ZIP', '.gz': 'DATASET_FORMAT_TAR_GZ', '.jsonl': 'DATASET_FORMAT_JSONL',
  '.csv': 'DATASET_FORMAT_CSV', '.tsv': 'DATASET_FORMAT_TSV',
};

function formatOf(filePath) {
  const format = FORMATS[path.extname(filePath).toLowerCase()];
  if (!format) throw new Error(`${filePath}: expected .zip, .tar.gz, .jsonl, .csv or .tsv`);
  return format;
}
