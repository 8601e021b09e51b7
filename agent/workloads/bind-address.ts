/**
 * Where a web instance listens: only on the address other agents' routers reach it at (the
 * agent's advertise address; 127.0.0.1 on a single-agent install such as `hangar dev`), not on
 * every interface. Procfiles say `--bind 0.0.0.0:$PORT` (Heroku's convention, and what a Django
 * app without a Procfile gets); that one address is swapped for the instance's.
 */

/** `0.0.0.0:$PORT`, `0.0.0.0:${PORT}` (gunicorn `--bind`/`-b`, `manage.py runserver`) and `--host 0.0.0.0` (uvicorn, flask). */
const ANY_ADDRESS = /(^|[\s='"])(?:0\.0\.0\.0|\[::\])(:\$\{?PORT\}?)(?=$|[\s'"])|(--host[\s=]+)(?:0\.0\.0\.0|::)(?=$|\s)/g;

/**
 * `command` with "every address" in its bind replaced by `address`; as it was when it names no
 * such bind, or when `address` is itself every address.
 */
export function bindCommand(command: string, address: string): string {
  if (address === '0.0.0.0' || address === '::') return command;
  const host = address.includes(':') ? `[${address}]` : address;
  return command.replace(ANY_ADDRESS, (_match, lead: string | undefined, port: string | undefined, flag: string | undefined) =>
    flag !== undefined ? `${flag}${address}` : `${lead ?? ''}${host}${port ?? ''}`,
  );
}

/** The address to dial an instance bound by {@link bindCommand} at (every address: loopback). */
export function dialAddress(address: string): string {
  return address === '0.0.0.0' || address === '::' ? '127.0.0.1' : address;
}
