// Validates the manifests of docker/k8s (scripts/k8s_check.sh runs it):
//  1. every YAML document against the schema of its apiVersion/kind (npm kubernetes-models: the
//     Kubernetes OpenAPI schemas compiled to validators), kustomization.yaml listing every file;
//  2. cross-checks the schemas cannot make. Those schemas accept unknown fields, so every field
//     the server relies on is read here and a misspelt one reads as missing: GPUs requested ==
//     --tp, backend cuda, the three probes on the gRPC health port, the metrics port in the
//     container ports and the scrape annotations, the --model-dir under a read-only mount of an
//     existing volume/claim, a memory-backed /dev/shm for NCCL, NCCL_NVLS_ENABLE=0, the image's
//     non-root uid, a termination grace above serve --grace-s, Service selectors and target
//     ports that match the pod, the HTTP port (--http-port) a container port exactly when served
//     and then published by a non-headless Service.
// Usage: node validate.cjs DIR               (exit 1 with one line per problem)
//        node validate.cjs --self-test DIR   seeds one fault at a time into a copy of DIR's
//                                            manifests; each must be reported
"use strict";
const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

const kImageUid = 10001;        // docker/Dockerfile: useradd --uid 10001
const kDefaultGrpcPort = 50051; // configs/default.json "port"
const kDefaultGraceS = 30;      // serve --grace-s default

function load(dir) {
  const files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
  const docs = [];
  let kustomization = null;
  const errors = [];
  for (const file of files) {
    for (const doc of YAML.parseAllDocuments(fs.readFileSync(path.join(dir, file), "utf8"))) {
      if (doc.errors.length) {
        errors.push(`${file}: YAML: ${doc.errors[0].message}`);
        continue;
      }
      const obj = doc.toJS();
      if (obj === null) continue;
      if (file === "kustomization.yaml") kustomization = obj;
      else docs.push({ file, obj });
    }
  }
  return { files: files.filter((f) => f !== "kustomization.yaml"), docs, kustomization, errors };
}

function schemaModel(apiVersion, kind) {
  const parts = String(apiVersion).split("/");
  const [group, version] = parts.length === 2 ? parts : ["", parts[0]];
  if (!/^[a-z0-9.]*$/.test(group) || !/^v[0-9a-z]+$/.test(version) || !/^[A-Z]\w+$/.test(kind)) {
    return null;
  }
  try {
    return require(path.posix.join("kubernetes-models", group, version, kind))[kind] || null;
  } catch (e) {
    return null;
  }
}

function schemaErrors({ files, docs, kustomization }) {
  const errors = [];
  for (const { file, obj } of docs) {
    const Model = schemaModel(obj.apiVersion, obj.kind);
    if (!Model) {
      errors.push(`${file}: no Kubernetes schema for ${obj.apiVersion} ${obj.kind}`);
      continue;
    }
    try {
      new Model(obj).validate();
    } catch (e) {
      const name = (obj.metadata && obj.metadata.name) || "?";
      errors.push(`${file}: ${obj.kind} ${name}: ${e.message.split("\n").join("; ")}`);
    }
  }
  const listed = (kustomization && kustomization.resources) || [];
  for (const f of files) {
    if (!listed.includes(f)) errors.push(`kustomization.yaml: resources lacks ${f}`);
  }
  for (const f of listed) {
    if (!files.includes(f)) errors.push(`kustomization.yaml: lists ${f}, which does not exist`);
  }
  return errors;
}

// The value after `flag` in args, or the value of `-o key=value` / `--set key=value`.
function argValue(args, flag, key) {
  const i = args.indexOf(flag);
  if (i >= 0 && i + 1 < args.length) return args[i + 1];
  for (let j = 0; j + 1 < args.length; ++j) {
    if ((args[j] === "-o" || args[j] === "--set") && args[j + 1].startsWith(`${key}=`)) {
      return args[j + 1].slice(key.length + 1);
    }
  }
  return undefined;
}

function subsetOf(labels, of) {
  return Object.entries(labels || {}).every(([k, v]) => of && of[k] === v);
}

function checkWorkload(file, w, claims, err) {
  const where = `${file}: ${w.kind} ${w.metadata.name}`;
  const tmpl = w.spec.template || {};
  const pod = tmpl.spec || {};
  const labels = (tmpl.metadata && tmpl.metadata.labels) || {};
  if (!subsetOf(w.spec.selector && w.spec.selector.matchLabels, labels)) {
    err(`${where}: selector does not match the pod labels`);
  }
  const c = (pod.containers || []).find((x) => x.name === "mlra-serve");
  if (!c) return err(`${where}: no container named mlra-serve`);
  const args = (c.args || []).map(String);
  if (args[0] !== "serve") err(`${where}: args must start with serve`);

  const tp = Number(argValue(args, "--tp", "tp") || 1);
  const limits = (c.resources && c.resources.limits) || {};
  const requests = (c.resources && c.resources.requests) || {};
  const gpus = limits["nvidia.com/gpu"];
  if (Number(gpus) !== tp) err(`${where}: nvidia.com/gpu limit ${gpus} != --tp ${tp}`);
  if (requests["nvidia.com/gpu"] !== undefined && requests["nvidia.com/gpu"] !== gpus) {
    err(`${where}: nvidia.com/gpu request differs from its limit`);
  }
  if (argValue(args, "--backend", "backend") !== "cuda") err(`${where}: backend must be cuda`);

  const ports = Object.fromEntries((c.ports || []).map((p) => [p.name, p.containerPort]));
  const grpcPort = Number(argValue(args, "--port", "port") || kDefaultGrpcPort);
  if (ports.grpc !== grpcPort) err(`${where}: container port grpc is not ${grpcPort}`);
  for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
    const p = c[probe];
    if (!p || !p.grpc || p.grpc.port !== grpcPort) {
      err(`${where}: ${probe} must ask grpc.health.v1 on port ${grpcPort}`);
    }
  }
  const metricsPort = Number(argValue(args, "--metrics-port", "metrics_port") || 0);
  if (!(metricsPort > 0)) err(`${where}: --metrics-port is not set`);
  if (ports.metrics !== metricsPort) err(`${where}: container port metrics is not ${metricsPort}`);
  const ann = (tmpl.metadata && tmpl.metadata.annotations) || {};
  if (ann["prometheus.io/scrape"] !== "true" || ann["prometheus.io/port"] !== String(metricsPort) ||
      ann["prometheus.io/path"] !== "/metrics") {
    err(`${where}: scrape annotations must name port ${metricsPort} and /metrics`);
  }
  // The OpenAI HTTP API: published as container port "http" exactly when served.
  const httpPort = Number(argValue(args, "--http-port", "http_port") || 0);
  if (httpPort > 0 && ports.http !== httpPort) {
    err(`${where}: container port http is not ${httpPort} (--http-port)`);
  }
  if (!(httpPort > 0) && ports.http !== undefined) {
    err(`${where}: container port http ${ports.http} is declared but --http-port is not set`);
  }

  const volumes = Object.fromEntries((pod.volumes || []).map((v) => [v.name, v]));
  const mounts = c.volumeMounts || [];
  for (const m of mounts) {
    if (!volumes[m.name]) err(`${where}: mount ${m.mountPath} names no volume ${m.name}`);
  }
  for (const v of Object.values(volumes)) {
    const claim = v.persistentVolumeClaim && v.persistentVolumeClaim.claimName;
    if (claim && !claims.has(claim)) err(`${where}: volume ${v.name} claims unknown ${claim}`);
  }
  const modelDir = argValue(args, "--model-dir", "model_dir");
  const modelMount = modelDir && mounts.find((m) => modelDir.startsWith(`${m.mountPath}/`));
  if (!modelMount) err(`${where}: --model-dir ${modelDir} lies under no volume mount`);
  else if (modelMount.readOnly !== true) err(`${where}: ${modelMount.mountPath} is not read-only`);
  const shm = mounts.find((m) => m.mountPath === "/dev/shm");
  const shmVolume = shm && volumes[shm.name];
  if (tp > 1 && !(shmVolume && shmVolume.emptyDir && shmVolume.emptyDir.medium === "Memory" &&
                  shmVolume.emptyDir.sizeLimit)) {
    err(`${where}: /dev/shm must be a sized memory-backed emptyDir for NCCL`);
  }
  const nvls = (c.env || []).find((e) => e.name === "NCCL_NVLS_ENABLE");
  if (!nvls || nvls.value !== "0") err(`${where}: NCCL_NVLS_ENABLE must be "0"`);

  const sc = { ...(pod.securityContext || {}), ...(c.securityContext || {}) };
  if (sc.runAsNonRoot !== true || sc.runAsUser !== kImageUid) {
    err(`${where}: must run as non-root uid ${kImageUid} (runAsNonRoot, runAsUser)`);
  }
  const grace = Number(argValue(args, "--grace-s", "grace_s") || kDefaultGraceS);
  if (!(pod.terminationGracePeriodSeconds > grace)) {
    err(`${where}: terminationGracePeriodSeconds must exceed serve --grace-s (${grace})`);
  }
  return { where, labels, ports: c.ports || [], httpPort };
}

// Whether Service port `p` reaches container port `cp` (by name, or by number).
function targets(p, cp) {
  const t = p.targetPort === undefined ? p.port : p.targetPort;
  return typeof t === "string" ? cp.name === t : cp.containerPort === t;
}

function crossCheckErrors({ docs }) {
  const errors = [];
  const err = (m) => errors.push(m);
  const claims = new Set(docs.filter((d) => d.obj.kind === "PersistentVolumeClaim")
                             .map((d) => d.obj.metadata.name));
  const pods = [];
  for (const { file, obj } of docs) {
    if (obj.kind === "Deployment" || obj.kind === "StatefulSet") {
      const pod = checkWorkload(file, obj, claims, err);
      if (pod) pods.push(pod);
    }
  }
  if (pods.length === 0) err("no Deployment or StatefulSet runs mlra-serve");
  for (const { file, obj } of docs) {
    if (obj.kind !== "Service") continue;
    const where = `${file}: Service ${obj.metadata.name}`;
    const pod = pods.find((p) => subsetOf(obj.spec.selector, p.labels));
    if (!pod) {
      err(`${where}: selector matches no pod`);
      continue;
    }
    for (const p of obj.spec.ports || []) {
      const t = p.targetPort === undefined ? p.port : p.targetPort;
      if (!pod.ports.some((cp) => targets(p, cp))) {
        err(`${where}: port ${p.name} targets ${t}, which the pod does not expose`);
      }
    }
  }
  // A served HTTP API is reachable through a Service that is not headless (the one clients and
  // port-forwards use), as gRPC and metrics are.
  for (const pod of pods) {
    if (!(pod.httpPort > 0)) continue;
    const http = pod.ports.find((cp) => cp.containerPort === pod.httpPort);
    const published = http && docs.some(({ obj }) =>
      obj.kind === "Service" && obj.spec.clusterIP !== "None" &&
      subsetOf(obj.spec.selector, pod.labels) &&
      (obj.spec.ports || []).some((p) => targets(p, http)));
    if (!published) err(`${pod.where}: no Service publishes the http port ${pod.httpPort}`);
  }
  return errors;
}

function validate(loaded) {
  return [...loaded.errors, ...schemaErrors(loaded), ...crossCheckErrors(loaded)];
}

// Faults seeded one at a time: [name, a piece of the error it must cause, seed]. `m.doc(kind)`
// finds the first object of that kind.
const pod = (m) => m.doc("Deployment").spec.template.spec;
const ctr = (m) => pod(m).containers[0];
const kFaults = [
  ["probe port as a string (schema type)", "grpc/port must be integer",
   (m) => { ctr(m).readinessProbe.grpc.port = "50051"; }],
  ["container without a name (schema required)", "must have required property name",
   (m) => { delete ctr(m).name; }],
  ["replicas as text (schema type)", "replicas must be integer",
   (m) => { m.doc("Deployment").spec.replicas = "one"; }],
  ["unknown kind", "no Kubernetes schema for v1 Servic",
   (m) => { m.doc("Service").kind = "Servic"; }],
  ["GPUs != --tp", "limit 2 != --tp 4",
   (m) => { ctr(m).resources.limits["nvidia.com/gpu"] = 2; }],
  ["misspelt readinessProbe", "readinessProbe must ask", (m) => {
    ctr(m).readinessprobe = ctr(m).readinessProbe;
    delete ctr(m).readinessProbe;
  }],
  ["liveness on another port", "livenessProbe must ask",
   (m) => { ctr(m).livenessProbe.grpc.port = 9464; }],
  ["scrape annotation on the wrong port", "scrape annotations", (m) => {
    m.doc("Deployment").spec.template.metadata.annotations["prometheus.io/port"] = "9465";
  }],
  ["writable checkpoint mount", "/models is not read-only",
   (m) => { ctr(m).volumeMounts[0].readOnly = false; }],
  ["no /dev/shm volume", "memory-backed emptyDir",
   (m) => { pod(m).volumes = pod(m).volumes.filter((v) => !v.emptyDir); }],
  ["unknown claim", "claims unknown mlra-checkpoints",
   (m) => { m.doc("PersistentVolumeClaim").metadata.name = "other"; }],
  ["root user", "non-root uid", (m) => { pod(m).securityContext.runAsUser = 0; }],
  ["grace shorter than the server's", "terminationGracePeriodSeconds must exceed",
   (m) => { pod(m).terminationGracePeriodSeconds = 20; }],
  ["NVLS on", "NCCL_NVLS_ENABLE",
   (m) => { ctr(m).env = [{ name: "NCCL_NVLS_ENABLE", value: "1" }]; }],
  ["Service target port misspelt", "targets grcp",
   (m) => { m.doc("Service").spec.ports[0].targetPort = "grcp"; }],
  ["Service selector matches no pod", "selector matches no pod",
   (m) => { m.doc("Service").spec.selector = { "app.kubernetes.io/name": "other" }; }],
  ["kustomization misses a file", "resources lacks",
   (m) => { m.kustomization.resources.pop(); }],
  ["http served but not a container port", "container port http is not 8000",
   (m) => { ctr(m).ports = ctr(m).ports.filter((p) => p.name !== "http"); }],
  ["http container port on another number", "container port http is not 8000",
   (m) => { ctr(m).ports.find((p) => p.name === "http").containerPort = 8080; }],
  ["http container port without --http-port", "--http-port is not set", (m) => {
    const args = ctr(m).args;
    args.splice(args.indexOf("--http-port"), 2);
  }],
  ["http port published by no Service", "no Service publishes the http port 8000", (m) => {
    const svc = m.doc("Service");
    svc.spec.ports = svc.spec.ports.filter((p) => p.name !== "http");
  }],
];

function selfTest(dir) {
  const clean = load(dir);
  const base = validate(clean);
  if (base.length) return [`the unmodified manifests fail: ${base.join(" | ")}`];
  const missed = [];
  for (const [name, expected, seed] of kFaults) {
    const copy = JSON.parse(JSON.stringify(clean));
    copy.doc = (kind) => copy.docs.find((d) => d.obj.kind === kind).obj;
    seed(copy);
    const errors = validate(copy);
    if (!errors.some((e) => e.includes(expected))) {
      missed.push(`seeded fault "${name}" not reported as "${expected}"; ` +
                  `got: ${errors.join(" | ") || "no error"}`);
    }
  }
  return missed;
}

function main() {
  const args = process.argv.slice(2);
  const self = args[0] === "--self-test";
  const dir = self ? args[1] : args[0];
  if (!dir) {
    console.error("usage: node validate.cjs [--self-test] DIR");
    process.exit(2);
  }
  const version = require("kubernetes-models/package.json").version;
  const errors = self ? selfTest(dir) : validate(load(dir));
  for (const e of errors) console.error(`k8s: ${e}`);
  if (errors.length) process.exit(1);
  if (self) {
    console.log(`k8s: all ${kFaults.length} seeded faults reported`);
  } else {
    const { docs, files } = load(dir);
    console.log(`k8s: ${docs.length} objects in ${files.length} files valid ` +
                `(kubernetes-models ${version}) and consistent with the server`);
  }
}

main();
