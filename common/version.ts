/** Hangar's version, reported by agents in hello and by `GET /v1/health`. */
export const HANGAR_VERSION = '0.1.0';
