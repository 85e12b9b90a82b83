#!/usr/bin/env node
// Compiles contracts/solidity/**/*.sol with the pinned solc-js through standard JSON and writes one
// artifact per contract into contracts/artifacts/ (ABI, bytecode, compiler version, settings, source
// hashes), so Python needs no Node at run time.
//
//   node contracts/compile.mjs           write the artifacts
//   node contracts/compile.mjs --check   exit 1 and name every artifact that would change
//
// Source unit names are paths relative to the repository root (and "@openzeppelin/..." for the
// pinned library), so the metadata hash embedded in the bytecode does not depend on where the
// repository is checked out.
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const solc = require('solc')

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const SOURCES = join(ROOT, 'contracts', 'solidity')
const ARTIFACTS = join(ROOT, 'contracts', 'artifacts')

// cancun: the newest fork py-evm (eth-tester) and anvil both run; solc's own default is newer.
const SETTINGS = {
  evmVersion: 'cancun',
  optimizer: { enabled: true, runs: 10000 },
  metadata: { bytecodeHash: 'ipfs' },
  outputSelection: {
    '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object', 'devdoc', 'userdoc'] }
  }
}

function solidityFiles (dir) {
  return readdirSync(dir).sort().flatMap((name) => {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) return solidityFiles(path)
    return name.endsWith('.sol') ? [path] : []
  })
}

function unitName (path) {
  return relative(ROOT, path).split(sep).join('/')
}

function resolveImport (unit) {
  const path = unit.startsWith('@') ? join(ROOT, 'node_modules', unit) : join(ROOT, unit)
  if (!existsSync(path)) return { error: `not found: ${unit} (run ./dev setup to install node_modules)` }
  return { contents: readFileSync(path, 'utf8') }
}

function sha256 (text) {
  return createHash('sha256').update(text).digest('hex')
}

function compile () {
  const sources = {}
  for (const path of solidityFiles(SOURCES)) sources[unitName(path)] = { content: readFileSync(path, 'utf8') }
  const input = { language: 'Solidity', sources, settings: SETTINGS }
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: resolveImport }))
  const errors = (output.errors || []).filter((e) => e.severity === 'error')
  // OpenZeppelin's own warnings (its transient-storage notice) are about code we do not edit.
  for (const e of output.errors || []) {
    if (e.severity === 'error' || !e.sourceLocation?.file?.startsWith('@openzeppelin/')) console.error(e.formattedMessage)
  }
  if (errors.length) process.exit(1)

  // Every source solc read (ours and OpenZeppelin's), with its hash: what the bytecode came from.
  const sourceHashes = {}
  for (const unit of Object.keys(output.sources).sort()) {
    sourceHashes[unit] = sha256(sources[unit]?.content ?? resolveImport(unit).contents)
  }
  const { outputSelection, ...settings } = SETTINGS
  const artifacts = {}
  for (const unit of Object.keys(sources)) {
    for (const [name, contract] of Object.entries(output.contracts[unit] || {})) {
      if (!contract.evm.bytecode.object) continue // interfaces
      artifacts[name] = {
        contractName: name,
        sourceName: unit,
        compiler: { name: 'solc-js', version: solc.version() },
        settings,
        sourceHash: sourceHashes[unit],
        sourceHashes,
        abi: contract.abi,
        bytecode: '0x' + contract.evm.bytecode.object,
        deployedBytecode: '0x' + contract.evm.deployedBytecode.object,
        devdoc: contract.devdoc,
        userdoc: contract.userdoc
      }
    }
  }
  return artifacts
}

function serialize (artifact) {
  return JSON.stringify(artifact, null, 2) + '\n'
}

const check = process.argv.includes('--check')
const artifacts = compile()
const expected = new Set(Object.keys(artifacts).map((name) => `${name}.json`))
const changed = []
if (!check) mkdirSync(ARTIFACTS, { recursive: true })
for (const [name, artifact] of Object.entries(artifacts)) {
  const path = join(ARTIFACTS, `${name}.json`)
  const text = serialize(artifact)
  const current = existsSync(path) ? readFileSync(path, 'utf8') : null
  if (current === text) continue
  changed.push(`${name}.json ${current === null ? 'missing' : 'differs'}`)
  if (!check) writeFileSync(path, text)
}
const stale = existsSync(ARTIFACTS)
  ? readdirSync(ARTIFACTS).filter((f) => f.endsWith('.json') && !expected.has(f))
  : []
for (const f of stale) changed.push(`${f} has no source`)

if (check) {
  if (changed.length) {
    console.error(`artifacts out of date (run node contracts/compile.mjs):\n  ${changed.join('\n  ')}`)
    process.exit(1)
  }
  console.log(`${expected.size} artifacts match solc ${solc.version()}`)
} else {
  console.log(`${changed.length ? changed.join('\n') : 'no change'}\n${expected.size} artifacts (solc ${solc.version()})`)
}
