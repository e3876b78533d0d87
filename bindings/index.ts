/**
 * bindings/: load the engine's WebAssembly module in Node, in browsers and in
 * workers, with no bundler plugin.
 *
 * Loading path chosen: the "--bindings raw" style of AssemblyScript 0.28.
 *   - asconfig.json builds with `--bindings raw --importMemory --runtime stub`.
 *     The engine does not own its memory: the host creates the
 *     `WebAssembly.Memory` (sized at run time) and passes it as `env.memory`
 *     together with the other imports. The release and debug builds declare
 *     the memory unshared; a shared memory needs a build with
 *     `sharedMemory` + `maximumMemory` + `enable: ["threads"]` (a wasm memory
 *     import must match in sharedness).
 *   - Compiling and instantiating are separate steps. `compileEngine()` yields a
 *     `WebAssembly.Module` once (cached for the default location); the host
 *     calls `instantiateEngine()` once per instance, e.g. once per worker, each
 *     with its imports. A `WebAssembly.Module` can be posted to a worker.
 *   - Not used: `--bindings esm` (top-level await, hard-wired URL, no custom
 *     imports, no workers; AssemblyScript #2488, #2724) and
 *     `@assemblyscript/loader` (deprecated since AssemblyScript 0.20).
 *
 * Where the default .wasm is:
 *   - Bundled package: scripts/build.mjs defines `__WASM_BASE__` as "./" and
 *     copies build/{release,debug}.wasm to dist/, next to dist/index.js. The
 *     bundle then holds the literal `new URL("./release.wasm", import.meta.url)`
 *     that Vite, webpack 5 and Parcel recognise and emit as an asset.
 *   - From source (Vitest imports this file directly): `__WASM_BASE__` is not
 *     defined and the module is ../build/<variant>.wasm relative to this file.
 *
 * How a source is read:
 *   - file: URL, or a plain path in Node/Bun/Deno: `readFile` from
 *     `node:fs/promises`, imported dynamically through a variable specifier so
 *     that browser bundles never see or resolve a Node module.
 *   - http(s):, blob:, data: URL, or a relative path in a browser or worker:
 *     `fetch`, then `WebAssembly.compileStreaming` when the response says
 *     `application/wasm`; otherwise (wrong MIME type, no compileStreaming, as
 *     in old Safari) `arrayBuffer()` + `WebAssembly.compile`.
 *   - Bytes, a `Response` or a precompiled `WebAssembly.Module` from the caller.
 */

/** Replaced by esbuild's `define` in the bundle ("./"); undefined in source. */
declare const __WASM_BASE__: string | undefined;

/** release / debug import an unshared memory; shared imports a shared one (shared-memory mode). */
export type WasmVariant = 'release' | 'debug' | 'shared';

/** Everything `compileEngine` accepts as the engine's wasm. */
export type WasmSource =
  | URL
  | string
  | ArrayBuffer
  | ArrayBufferView
  | WebAssembly.Module
  | Response
  | Promise<Response>;

/** Thrown when the engine's wasm cannot be read, fetched or compiled. */
export class EngineLoadError extends Error {
  override readonly name = 'EngineLoadError';
  /** A printable name of what was being loaded (URL, path or kind of source). */
  readonly source: string;
  constructor(message: string, source: string, options?: { cause?: unknown }) {
    super(message, options);
    this.source = source;
  }
}

/** The URL of the engine's wasm that ships with this package (or the build/ dir in source). */
export function defaultWasmUrl(variant: WasmVariant = 'release'): URL {
  checkVariant(variant);
  if (typeof __WASM_BASE__ === 'string') {
    if (__WASM_BASE__ === './') {
      // Literal specifiers: bundlers of the consuming app rewrite and copy these.
      return variant === 'debug'
        ? new URL('./debug.wasm', import.meta.url)
        : variant === 'shared'
          ? new URL('./shared.wasm', import.meta.url)
          : new URL('./release.wasm', import.meta.url);
    }
    return new URL(`${__WASM_BASE__}${variant}.wasm`, import.meta.url);
  } else {
    // An if/else (not an early return) so that esbuild drops this branch from the bundle.
    return new URL(`../build/${variant}.wasm`, import.meta.url);
  }
}

const defaultModules = new Map<WasmVariant, Promise<WebAssembly.Module>>();

/**
 * Compile the engine. With no `source`, compiles the wasm that ships with the
 * package (`variant` picks release or debug) and caches the module per variant;
 * an explicit `source` is compiled every time, except that a
 * `WebAssembly.Module` is returned as is.
 */
export async function compileEngine(
  source?: WasmSource,
  variant: WasmVariant = 'release',
): Promise<WebAssembly.Module> {
  if (source === undefined || source === null) {
    checkVariant(variant);
    let pending = defaultModules.get(variant);
    if (pending === undefined) {
      pending = compileFromUrl(defaultWasmUrl(variant));
      defaultModules.set(variant, pending);
      // A failed load (e.g. the wasm was not built yet) is not cached.
      pending.catch(() => {
        if (defaultModules.get(variant) === pending) defaultModules.delete(variant);
      });
    }
    return pending;
  }
  if (source instanceof WebAssembly.Module) return source;
  if (source instanceof URL) return compileFromUrl(source);
  if (typeof source === 'string') return compileFromString(source);
  if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) {
    return compileBytes(source, describeBytes(source));
  }
  if (typeof SharedArrayBuffer !== 'undefined' && (source as unknown) instanceof SharedArrayBuffer) {
    return compileBytes(source as unknown as ArrayBuffer, 'SharedArrayBuffer');
  }
  if (isResponse(source)) return compileResponse(source, source.url || 'Response');
  if (isPromiseLike(source)) {
    let response: unknown;
    try {
      response = await source;
    } catch (cause) {
      throw new EngineLoadError(
        `wasm-viommu: fetching the engine wasm failed: ${messageOf(cause)}`,
        'Promise<Response>',
        { cause },
      );
    }
    if (!isResponse(response)) {
      throw new EngineLoadError(
        `wasm-viommu: the promise passed to compileEngine resolved to ${kindOf(response)}, not a Response`,
        'Promise<Response>',
      );
    }
    return compileResponse(response, response.url || 'Response');
  }
  throw new EngineLoadError(
    `wasm-viommu: unsupported wasm source (${kindOf(source)}); expected a URL, a path or URL string, ` +
      'an ArrayBuffer or ArrayBufferView, a WebAssembly.Module, or a Response (or a promise of one)',
    kindOf(source),
  );
}

/**
 * Instantiate a compiled engine. The engine imports its memory: pass a
 * `WebAssembly.Memory` as `imports.env.memory`, shared only if the module was
 * built shared, with an initial size of at least the module's declared minimum.
 * A mismatch rejects with the engine's `WebAssembly.LinkError`.
 */
export async function instantiateEngine(
  module: WebAssembly.Module,
  imports: WebAssembly.Imports,
): Promise<WebAssembly.Instance> {
  const needsMemory = WebAssembly.Module.imports(module).some(
    (i) => i.module === 'env' && i.name === 'memory' && i.kind === 'memory',
  );
  if (needsMemory && !(imports?.env?.memory instanceof WebAssembly.Memory)) {
    throw new EngineLoadError(
      'wasm-viommu: the engine imports its memory; pass a WebAssembly.Memory as imports.env.memory',
      'WebAssembly.Module',
    );
  }
  // Embedder segments are unknown to a bare instance: its table reads there fail (seg_load 0).
  const env = { seg_load: () => 0, seg_store: () => {}, ...(imports?.env ?? {}) };
  return WebAssembly.instantiate(module, { ...imports, env });
}

// ---------------------------------------------------------------------------

function checkVariant(variant: string): asserts variant is WasmVariant {
  if (variant !== 'release' && variant !== 'debug' && variant !== 'shared') {
    throw new EngineLoadError(
      `wasm-viommu: unknown engine variant ${JSON.stringify(variant)}; expected "release", "debug" or "shared"`,
      String(variant),
    );
  }
}

/** Matches a Windows drive path ("C:\x", "c:/x"), which `new URL` would take for a URL. */
const WINDOWS_PATH = /^[a-zA-Z]:[\\/]/;

function compileFromString(source: string): Promise<WebAssembly.Module> {
  if (!WINDOWS_PATH.test(source)) {
    let url: URL | undefined;
    try {
      url = new URL(source);
    } catch {
      url = undefined;
    }
    if (url !== undefined) return compileFromUrl(url);
  }
  // Not an absolute URL: a file path in Node-like runtimes, a relative URL elsewhere.
  if (isNodeLike()) return compileFromFile(source, source);
  return compileFromFetch(source, source);
}

function compileFromUrl(url: URL): Promise<WebAssembly.Module> {
  if (url.protocol === 'file:') return compileFromFile(url, url.href);
  return compileFromFetch(url, url.href);
}

interface NodeFs {
  readFile(path: URL | string): Promise<Uint8Array>;
}

/** Hidden from bundlers: a variable specifier plus the ignore hints of webpack and Vite. */
const NODE_FS = 'node:fs/promises';

async function loadNodeFs(): Promise<NodeFs | undefined> {
  try {
    return (await import(/* webpackIgnore: true */ /* @vite-ignore */ NODE_FS)) as NodeFs;
  } catch {
    return undefined;
  }
}

async function compileFromFile(path: URL | string, name: string): Promise<WebAssembly.Module> {
  const fs = await loadNodeFs();
  if (fs === undefined) {
    // No Node file system (a browser given a file: URL): let fetch try.
    return compileFromFetch(path, name);
  }
  let bytes: Uint8Array;
  try {
    bytes = await fs.readFile(path);
  } catch (cause) {
    const code = (cause as { code?: unknown })?.code;
    const hint = code === 'ENOENT' ? ' (build it with "npm run build:wasm")' : '';
    throw new EngineLoadError(
      `wasm-viommu: cannot read the engine wasm at ${name}: ${messageOf(cause)}${hint}`,
      name,
      { cause },
    );
  }
  return compileBytes(bytes, name);
}

async function compileFromFetch(url: URL | string, name: string): Promise<WebAssembly.Module> {
  if (typeof fetch !== 'function') {
    throw new EngineLoadError(`wasm-viommu: cannot load ${name}: no fetch() in this environment`, name);
  }
  let response: Response;
  try {
    response = await fetch(url);
  } catch (cause) {
    throw new EngineLoadError(`wasm-viommu: fetching ${name} failed: ${messageOf(cause)}`, name, { cause });
  }
  return compileResponse(response, name);
}

async function compileResponse(response: Response, name: string): Promise<WebAssembly.Module> {
  // status 0: opaque or non-HTTP (file:) responses; let the body decide.
  if (!response.ok && response.status !== 0) {
    throw new EngineLoadError(
      `wasm-viommu: fetching ${name} failed: HTTP ${response.status} ${response.statusText}`.trimEnd(),
      name,
    );
  }
  if (response.bodyUsed) {
    throw new EngineLoadError(`wasm-viommu: the Response for ${name} was already consumed`, name);
  }
  const mime = (response.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  if (mime === 'application/wasm' && typeof WebAssembly.compileStreaming === 'function') {
    try {
      return await WebAssembly.compileStreaming(response);
    } catch (cause) {
      throw compileError(cause, name);
    }
  }
  let bytes: ArrayBuffer;
  try {
    bytes = await response.arrayBuffer();
  } catch (cause) {
    throw new EngineLoadError(`wasm-viommu: reading ${name} failed: ${messageOf(cause)}`, name, { cause });
  }
  return compileBytes(bytes, name);
}

async function compileBytes(bytes: ArrayBuffer | ArrayBufferView, name: string): Promise<WebAssembly.Module> {
  // V8 takes neither a DataView nor SharedArrayBuffer-backed bytes: give it a
  // Uint8Array over the same bytes, or a copy when they are shared.
  let input = ArrayBuffer.isView(bytes)
    ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    : new Uint8Array(bytes);
  if (typeof SharedArrayBuffer !== 'undefined' && input.buffer instanceof SharedArrayBuffer) {
    input = input.slice();
  }
  try {
    return await WebAssembly.compile(input as Uint8Array<ArrayBuffer>);
  } catch (cause) {
    throw compileError(cause, name);
  }
}

function compileError(cause: unknown, name: string): EngineLoadError {
  return new EngineLoadError(
    `wasm-viommu: ${name} is not a valid engine wasm module: ${messageOf(cause)}`,
    name,
    { cause },
  );
}

function isNodeLike(): boolean {
  const p = (globalThis as { process?: { versions?: Record<string, string | undefined> } }).process;
  return p?.versions?.node !== undefined || p?.versions?.bun !== undefined || 'Deno' in globalThis;
}

function isResponse(value: unknown): value is Response {
  if (typeof Response !== 'undefined' && value instanceof Response) return true;
  // A Response from another realm (iframe, polyfill) still has this shape.
  const v = value as Partial<Response> | null;
  return (
    typeof v === 'object' && v !== null &&
    typeof v.arrayBuffer === 'function' &&
    typeof v.headers === 'object' && v.headers !== null &&
    typeof v.status === 'number'
  );
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return (
    (typeof value === 'object' || typeof value === 'function') && value !== null &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}

function describeBytes(bytes: ArrayBuffer | ArrayBufferView): string {
  return `${bytes.constructor?.name ?? 'bytes'}(${bytes.byteLength} bytes)`;
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value !== 'object') return typeof value;
  return (value as object).constructor?.name ?? 'object';
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
