#!/usr/bin/env node
// Validate a glTF 2.0 asset (.glb or .gltf) with the Khronos glTF validator and print its JSON
// report on stdout. Exit status: 0 when the report has no errors, 1 when it has errors,
// 2 when the file cannot be read or the validator is not installed (run tools/node_deps.sh).
//
//   node tools/gltf_validate.mjs model.glb
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "node", "package.json"));

const file = process.argv[2];
if (!file) {
  console.error("usage: node tools/gltf_validate.mjs FILE.glb|FILE.gltf");
  process.exit(2);
}

let validator;
try {
  validator = require("gltf-validator");
} catch (err) {
  console.error("error: gltf-validator is not installed (run tools/node_deps.sh)");
  process.exit(2);
}

let bytes;
try {
  bytes = new Uint8Array(fs.readFileSync(file));
} catch (err) {
  console.error(`error: ${file}: ${err.message}`);
  process.exit(2);
}

const loadExternal = (uri) =>
  new Promise((resolve, reject) => {
    fs.readFile(path.resolve(path.dirname(file), decodeURIComponent(uri)), (err, data) =>
      err ? reject(err.toString()) : resolve(new Uint8Array(data)));
  });

try {
  const report = await validator.validateBytes(bytes, {
    uri: path.basename(file),
    maxIssues: 0,
    writeTimestamp: false,
    externalResourceFunction: loadExternal,
  });
  process.stdout.write(JSON.stringify(report, null, 2) + "\n");
  process.exit(report.issues.numErrors > 0 ? 1 : 0);
} catch (err) {
  console.error(`error: ${file}: ${err}`);
  process.exit(2);
}
