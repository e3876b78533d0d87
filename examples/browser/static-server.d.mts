export interface StaticServer {
  readonly url: string;
  /** Paths requested, in order (to check what the page fetched). */
  readonly requests: string[];
  close(): Promise<void>;
}

export function serveStatic(root: string, opts?: { isolated?: boolean; port?: number; redirect?: string }): Promise<StaticServer>;
