// The gateway's ModelLibraryService over gRPC-Web, from the page's own origin, with the API
// token (when the gateway wants one) kept in this browser only.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  PreconditionFailureSchema,
  ResourceInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb";
import { ModelLibraryService } from "./gen/pumas/gateway/v1/gateway_pb";

const TOKEN_KEY = "pumas.apiToken";

export function token(): string {
  return localStorage.getItem(TOKEN_KEY) ?? "";
}

export function setToken(value: string): void {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

const bearer: Interceptor = (next) => async (req) => {
  const t = token();
  if (t) req.header.set("authorization", `Bearer ${t}`);
  return next(req);
};

export const api: Client<typeof ModelLibraryService> = createClient(
  ModelLibraryService,
  createGrpcWebTransport({ baseUrl: location.origin, interceptors: [bearer] }),
);

/** What a person reads for a failed call: the code's name, the server's message, and the rich
 *  details it sent (the field that was wrong, the resource, the state, when to retry, the
 *  reason), each as a line. */
export function describe(err: unknown): { code: string; message: string; details: string[] } {
  const e = ConnectError.from(err);
  const details = [
    ...e.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations.map((v) => `${v.field}: ${v.description}`)),
    ...e.findDetails(ResourceInfoSchema).map((r) => `${r.resourceType} ${r.resourceName}`.trim()),
    ...e.findDetails(PreconditionFailureSchema).flatMap((p) => p.violations.map((v) => `${v.type} ${v.subject}`.trim())),
    ...e.findDetails(RetryInfoSchema).map((r) => `retry in ${Number(r.retryDelay?.seconds ?? 0n) + (r.retryDelay?.nanos ?? 0) / 1e9} s`),
    ...e.findDetails(ErrorInfoSchema).map((i) => `reason ${i.reason}${i.domain ? ` (${i.domain})` : ""}`),
  ];
  return { code: Code[e.code] ?? String(e.code), message: e.rawMessage, details };
}

export function isUnauthenticated(err: unknown): boolean {
  return ConnectError.from(err).code === Code.Unauthenticated;
}
