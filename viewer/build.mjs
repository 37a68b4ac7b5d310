// Builds headgraph/api/static/vendor/, the pages' vendored files, from node_modules:
//
//   cytoscape.min.js                  Cytoscape.js (the viewer at /)
//   graphiql/react.production.min.js  React 18 (UMD: GraphiQL 3's UMD build needs it)
//   graphiql/react-dom.production.min.js
//   graphiql/graphiql.min.js          GraphiQL (UMD; bundles graphql-js and CodeMirror 5)
//   graphiql/graphiql.min.css         its styles (fonts inlined as data: URLs)
//
// Each file is the package's own built file with a first line naming the package, version
// and source path. Two changes only: a file that does not carry its licence text gets the
// package's LICENSE as a leading comment, and a trailing sourceMappingURL comment is dropped
// (the maps are not vendored, so a browser's devtools would ask the server for a 404).
//
//   cd viewer && npm ci && npm run build
//
// `npm run check` rebuilds in memory and fails if a committed file differs, is missing, or
// if vendor/ holds a file this script does not write.
import { readFileSync, writeFileSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "..", "headgraph", "api", "static", "vendor");
const pinned = JSON.parse(readFileSync(join(here, "package.json"), "utf8")).dependencies;

const FILES = [
  { pkg: "cytoscape", from: "dist/cytoscape.min.js", to: "cytoscape.min.js" },
  { pkg: "react", from: "umd/react.production.min.js", to: "graphiql/react.production.min.js" },
  { pkg: "react-dom", from: "umd/react-dom.production.min.js", to: "graphiql/react-dom.production.min.js" },
  { pkg: "graphiql", from: "graphiql.min.js", to: "graphiql/graphiql.min.js" },
  { pkg: "graphiql", from: "graphiql.min.css", to: "graphiql/graphiql.min.css" },
];
const SOURCE_MAP = /\n(\/\/# sourceMappingURL=[^\n]*|\/\*# sourceMappingURL=[^\n]*\*\/)\s*$/;

function build({ pkg, from }) {
  const dir = join(here, "node_modules", pkg);
  const { version } = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  if (version !== pinned[pkg]) {
    console.error(`node_modules has ${pkg} ${version}, package.json pins ${pinned[pkg]}: run npm ci`);
    process.exit(1);
  }
  let body = readFileSync(join(dir, from), "utf8").replace(SOURCE_MAP, "\n");
  if (!body.includes("Permission is hereby granted")) {
    const licence = readFileSync(join(dir, "LICENSE"), "utf8").trim().replaceAll("*/", "* /");
    body = `/*! ${pkg} licence (node_modules/${pkg}/LICENSE):\n\n${licence}\n*/\n${body}`;
  }
  return `/* ${pkg} ${version} (npm), ${from}; vendored by viewer/build.mjs */\n${body}`;
}

function walk(dir) {
  let found = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    found = statSync(path).isDirectory() ? [...found, ...walk(path)] : [...found, path];
  }
  return found;
}

const built = FILES.map((f) => ({ ...f, path: join(vendor, f.to), text: build(f) }));

if (process.argv.includes("--check")) {
  let bad = 0;
  for (const { path, pkg, text } of built) {
    let committed = "";
    try { committed = readFileSync(path, "utf8"); } catch { /* missing: differs */ }
    if (committed !== text) {
      console.error(`${path} is not the build of ${pkg} ${pinned[pkg]}: run npm run build`);
      bad++;
    }
  }
  const expected = new Set(built.map((f) => f.path));
  for (const path of walk(vendor).filter((p) => !expected.has(p))) {
    console.error(`${path} is not written by build.mjs: delete it or add it to FILES`);
    bad++;
  }
  if (bad) process.exit(1);
  const total = built.reduce((n, f) => n + Buffer.byteLength(f.text), 0);
  console.log(`${relative(here, vendor)}: ${built.length} files up to date (${total} bytes)`);
} else {
  for (const { path, pkg, text } of built) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
    console.log(`wrote ${relative(here, path)} (${pkg} ${pinned[pkg]}, ${Buffer.byteLength(text)} bytes)`);
  }
}
