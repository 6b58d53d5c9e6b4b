// Screenshots of the Dagster and MLflow UIs for the README, with Playwright
// driving Debian's Chromium. Usage: node scripts/screenshots.mjs DAGSTER_URL MLFLOW_URL EXPERIMENT_ID OUT_DIR
// (scripts/screenshots.sh starts the servers and installs what this needs).
import { createRequire } from 'node:module';

// playwright-core lives outside the project (PW_DIR, installed by screenshots.sh)
const { chromium } = createRequire(`${process.env.PW_DIR}/`)('playwright-core');

const [dagster, mlflow, experiment, out] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });

async function open(url, wait = 4000) {
  await page.goto(url);
  await page.waitForTimeout(wait);
  const skip = page.getByRole('button', { name: 'Skip' });  // Dagster's first-visit community dialog
  if (await skip.count()) { await skip.click(); await page.waitForTimeout(500); }
}
async function mlflowChrome() {  // MLflow 3: the model-training view, without the assistant panel
  const training = page.getByText('Model training', { exact: true });
  if (await training.count()) { await training.first().click(); await page.waitForTimeout(1000); }
  const close = page.getByRole('button', { name: 'Close' });
  if (await close.count()) { await close.last().click(); await page.waitForTimeout(500); }
  const gotIt = page.getByRole('button', { name: 'Got it' });
  if (await gotIt.count()) { await gotIt.click(); await page.waitForTimeout(500); }
}
async function shot(name) {
  await page.screenshot({ path: `${out}/${name}.png` });
  console.log(`${out}/${name}.png`);
}

// the whole asset graph, every group expanded (Dagster remembers expanded groups)
await open(`${dagster}/asset-groups`);
for (let i = 0; i < 8; i++) {
  const fold = page.locator('[aria-label="unfold_more"]');
  if (!(await fold.count())) break;
  await fold.first().click({ force: true });
  await page.waitForTimeout(1500);
  await page.reload();  // re-fit the graph before the next click
  await page.waitForTimeout(4000);
}
await shot('ui_dagster_graph');

// the comparison asset: table, chart and numbers in its metadata
await open(`${dagster}/assets/compare`);
await shot('ui_dagster_comparison');
await open(`${dagster}/assets/pretrain`);
await shot('ui_dagster_encoder');

// MLflow: every stage's run, and the detector versions with the champion alias
await open(`${mlflow}/#/experiments/${experiment}/runs`, 5000);
await mlflowChrome();
await shot('ui_mlflow_runs');
await open(`${mlflow}/#/models/ctx-detector`, 5000);
await mlflowChrome();
await shot('ui_mlflow_registry');
await browser.close();
