// Builds headgraph/api/static/vendor/cytoscape.min.js, the viewer's one vendored file:
// Cytoscape.js's own minified UMD build (dist/cytoscape.min.js, MIT, licence header kept)
// from node_modules, with a first line naming the version it came from.
//
//   cd viewer && npm ci && npm run build
//
// `npm run check` rebuilds in memory and fails if the committed file differs.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const pkgDir = join(here, "node_modules", "cytoscape");
const out = join(here, "..", "headgraph", "api", "static", "vendor", "cytoscape.min.js");

const { version } = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
const wanted = JSON.parse(readFileSync(join(here, "package.json"), "utf8")).dependencies.cytoscape;
if (version !== wanted) {
  console.error(`node_modules has cytoscape ${version}, package.json pins ${wanted}: run npm ci`);
  process.exit(1);
}
const body = readFileSync(join(pkgDir, "dist", "cytoscape.min.js"), "utf8");
const built = `/* cytoscape ${version} (npm), dist/cytoscape.min.js; vendored by viewer/build.mjs */\n${body}`;

if (process.argv.includes("--check")) {
  let committed = "";
  try { committed = readFileSync(out, "utf8"); } catch { /* missing: differs */ }
  if (committed !== built) {
    console.error(`${out} is not the build of cytoscape ${version}: run npm run build`);
    process.exit(1);
  }
  console.log(`${out} is up to date (cytoscape ${version})`);
} else {
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, built);
  console.log(`wrote ${out} (cytoscape ${version}, ${built.length} bytes)`);
}
